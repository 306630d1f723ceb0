//! Round-trip and malformed-input tests for the frame codec and every message.

use bytes::{BufMut, BytesMut};
use protocol::frame::{decode_payload, LENGTH_PREFIX};
use protocol::handshake::{peek_version, version_mismatch_message};
use protocol::*;

fn hello() -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        credential: "dbr_agent_secret".into(),
        agent_version: "0.1.0".into(),
        instance_id: [7; 16],
        routes: vec![RouteOffer {
            name: "demo".into(),
            kind: UpstreamKind::Http,
            policy: None,
            accept_tool_changes: false,
        }],
    }
}

fn exchange() -> StreamOpen {
    StreamOpen::Exchange(ExchangeHead {
        route: "demo".into(),
        method: "POST".into(),
        path: "/x?y=1".into(),
        headers: vec![Header {
            name: "content-type".into(),
            value: b"application/json\xff".to_vec(),
        }],
        identity: Identity {
            subject: "alice@example.com".into(),
            kind: IdentityKind::ClientToken,
            credential_name: "laptop".into(),
            groups: Vec::new(),
        },
        request_id: "r1".into(),
        session: Some("s".into()),
        body: BodyKind::Length(12),
        grants: Vec::new(),
    })
}

fn roundtrip<T>(what: &'static str, msg: T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut buf = BytesMut::new();
    encode_frame(what, &msg, FrameLimit::HEAD, &mut buf).expect("encode");
    // Fed one byte at a time, the decoder waits until the frame is whole.
    let whole = buf.clone();
    let mut partial = BytesMut::new();
    for (i, b) in whole.iter().enumerate() {
        partial.put_u8(*b);
        let got: Option<T> = decode_frame(what, &mut partial, FrameLimit::HEAD).expect("decode");
        if i + 1 < whole.len() {
            assert!(got.is_none(), "decoded early at byte {i}");
        } else {
            assert_eq!(got.as_ref(), Some(&msg));
        }
    }
    assert!(partial.is_empty(), "frame bytes consumed");
}

#[test]
fn every_message_roundtrips() {
    roundtrip("hello", hello());
    roundtrip(
        "reply",
        HelloReply::Welcome(Welcome {
            version: 1,
            relay_version: "0.1.0".into(),
            owner: "alice@example.com".into(),
            session_id: 42,
            routes: vec![AcceptedRoute {
                name: "demo".into(),
                public_url: "https://relay/mcp/demo".into(),
            }],
            keepalive_interval_ms: 5000,
        }),
    );
    roundtrip(
        "reply",
        HelloReply::Refused(Refusal::new(RefusalCode::RouteTaken, "taken")),
    );
    roundtrip("control", Control::Ping { nonce: u64::MAX });
    roundtrip("control", Control::Pong { nonce: 0 });
    roundtrip(
        "control",
        Control::Nodes {
            this: "192.0.2.1:443".into(),
            addresses: vec!["192.0.2.1:443".into(), "[2001:db8::2]:443".into()],
        },
    );
    roundtrip(
        "control",
        Control::GoAway {
            reason: GoAwayReason::Shutdown,
            reconnect: true,
            message: "bye".into(),
        },
    );
    roundtrip("open", exchange());
    roundtrip(
        "response",
        ResponseHead {
            status: 200,
            headers: vec![],
        },
    );
}

#[test]
fn two_frames_in_one_buffer_decode_in_order() {
    let mut buf = BytesMut::new();
    encode_frame(
        "c",
        &Control::Ping { nonce: 1 },
        FrameLimit::CONTROL,
        &mut buf,
    )
    .expect("encode");
    encode_frame(
        "c",
        &Control::Pong { nonce: 2 },
        FrameLimit::CONTROL,
        &mut buf,
    )
    .expect("encode");
    let a: Option<Control> = decode_frame("c", &mut buf, FrameLimit::CONTROL).expect("a");
    let b: Option<Control> = decode_frame("c", &mut buf, FrameLimit::CONTROL).expect("b");
    assert_eq!(a, Some(Control::Ping { nonce: 1 }));
    assert_eq!(b, Some(Control::Pong { nonce: 2 }));
    assert!(buf.is_empty());
}

#[test]
fn oversized_length_is_refused_before_the_payload_arrives() {
    let mut buf = BytesMut::new();
    buf.put_u32(u32::MAX);
    let err =
        decode_frame::<Control>("control", &mut buf, FrameLimit::CONTROL).expect_err("must fail");
    assert!(
        matches!(err, DecodeError::FrameTooLarge { len, max } if len == u32::MAX as usize && max == 64 * 1024),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "frame of 4294967295 bytes exceeds the limit of 65536 bytes"
    );
}

#[test]
fn empty_frame_is_refused() {
    let mut buf = BytesMut::new();
    buf.put_u32(0);
    let err =
        decode_frame::<Control>("control", &mut buf, FrameLimit::CONTROL).expect_err("must fail");
    assert!(matches!(err, DecodeError::EmptyFrame));
}

#[test]
fn garbage_payload_is_malformed_not_a_panic() {
    // Every single-byte and many two-byte payloads: none may panic, all
    // that fail must fail with a typed error.
    for a in 0..=255u8 {
        for b in [0u8, 1, 0x7f, 0x80, 0xff] {
            let _ = decode_payload::<Hello>("hello", &[a, b]);
            let _ = decode_payload::<StreamOpen>("open", &[a, b]);
            let _ = decode_payload::<Control>("control", &[a, b]);
        }
    }
    let err = decode_payload::<Control>("control", &[9, 9, 9]).expect_err("must fail");
    assert!(
        matches!(
            err,
            DecodeError::Malformed {
                what: "control",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let mut payload = postcard::to_stdvec(&Control::Ping { nonce: 3 }).expect("encode");
    payload.push(0);
    let err = decode_payload::<Control>("control", &payload).expect_err("must fail");
    assert!(
        matches!(err, DecodeError::TrailingBytes { extra: 1, .. }),
        "{err}"
    );
}

#[test]
fn a_huge_string_length_inside_a_small_frame_does_not_allocate() {
    // A payload claiming a 2^32-byte string: postcard must fail on the bounds
    // of the frame, not try to allocate.
    let payload = [1u8, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(decode_payload::<Hello>("hello", &payload).is_err());
}

#[test]
fn encoding_above_the_limit_is_refused() {
    let mut buf = BytesMut::new();
    let big = Control::GoAway {
        reason: GoAwayReason::Shutdown,
        reconnect: false,
        message: "x".repeat(70 * 1024),
    };
    let err = encode_frame("control", &big, FrameLimit::CONTROL, &mut buf).expect_err("must fail");
    assert!(matches!(err, FrameError::Encode { .. }), "{err}");
    assert!(buf.is_empty(), "nothing written on failure");
}

#[test]
fn version_is_readable_from_any_hello() {
    let payload = postcard::to_stdvec(&hello()).expect("encode");
    assert_eq!(peek_version(&payload).expect("peek"), PROTOCOL_VERSION);
    // A future Hello whose other fields we cannot decode still yields its version.
    let mut future = postcard::to_stdvec(&900u16).expect("encode");
    future.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(peek_version(&future).expect("peek"), 900);
    assert!(decode_payload::<Hello>("hello", &future).is_err());
    let msg = version_mismatch_message(900, 1, 1);
    assert!(msg.contains("upgrade the relay"), "{msg}");
    let msg = version_mismatch_message(0, 1, 1);
    assert!(msg.contains("upgrade the agent"), "{msg}");
}

#[test]
fn refused_stays_variant_one() {
    let payload = postcard::to_stdvec(&HelloReply::Refused(Refusal::new(
        RefusalCode::VersionMismatch,
        "m",
    )))
    .expect("encode");
    assert_eq!(payload[0], 1, "HelloReply::Refused must stay variant 1");
    assert_eq!(
        payload[1], 0,
        "RefusalCode::VersionMismatch must stay code 0"
    );
}

#[tokio::test]
async fn async_reader_sees_truncation_and_closure() {
    // Closed before any frame.
    let mut empty: &[u8] = &[];
    let err = read_frame::<Control, _>("control", &mut empty, FrameLimit::CONTROL)
        .await
        .expect_err("must fail");
    assert!(
        matches!(err, FrameError::Closed { what: "control" }),
        "{err}"
    );

    // Ended inside the prefix.
    let mut short: &[u8] = &[0, 0];
    let err = read_frame::<Control, _>("control", &mut short, FrameLimit::CONTROL)
        .await
        .expect_err("must fail");
    assert!(matches!(err, FrameError::Truncated { .. }), "{err}");

    // Ended inside the payload.
    let mut buf = BytesMut::new();
    encode_frame(
        "control",
        &Control::Ping { nonce: 5 },
        FrameLimit::CONTROL,
        &mut buf,
    )
    .expect("e");
    let cut = &buf[..buf.len() - 1];
    let mut r: &[u8] = cut;
    let err = read_frame::<Control, _>("control", &mut r, FrameLimit::CONTROL)
        .await
        .expect_err("must fail");
    assert!(matches!(err, FrameError::Truncated { .. }), "{err}");

    // Oversized prefix: refused after reading only 4 bytes.
    let mut huge: &[u8] = &[0x7f, 0xff, 0xff, 0xff, 1, 2, 3];
    let err = read_frame::<Control, _>("control", &mut huge, FrameLimit::CONTROL)
        .await
        .expect_err("must fail");
    assert!(
        matches!(err, FrameError::Decode(DecodeError::FrameTooLarge { .. })),
        "{err}"
    );
    assert_eq!(huge.len(), 3, "payload bytes were not read");

    // And a whole frame works.
    let mut whole: &[u8] = &buf;
    let got: Control = read_frame("control", &mut whole, FrameLimit::CONTROL)
        .await
        .expect("read");
    assert_eq!(got, Control::Ping { nonce: 5 });
    assert_eq!(LENGTH_PREFIX, 4);
}

/// A message's postcard payload.
fn payload<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_allocvec(msg).expect("encode")
}

#[test]
fn a_version_2_head_is_the_version_3_head_without_its_grants() {
    let StreamOpen::Exchange(mut head) = exchange();
    let v3_empty = payload(&head.as_v3());
    let v2 = payload(&head.as_v2());
    // Version 3 appends the grants: an empty list is one byte (length 0).
    assert_eq!(&v3_empty[..v3_empty.len() - 1], v2.as_slice());
    assert_eq!(v3_empty.last(), Some(&0));
    // With grants, the version 2 head is unchanged.
    head.grants.push(RouteGrant {
        id: "a1".into(),
        with: "@example.com".into(),
        tools: None,
        read_only: true,
        expires_at: None,
        resources: vec!["memo://*".into()],
        prompts: Vec::new(),
    });
    assert_eq!(payload(&head.as_v2()), v2);
    roundtrip("exchange", StreamOpen::Exchange(head));
}

fn head_with_groups(groups: Vec<String>) -> ExchangeHead {
    let StreamOpen::Exchange(mut head) = exchange();
    head.identity.groups = groups;
    head.grants.push(RouteGrant {
        id: "a1".into(),
        with: "@example.com".into(),
        tools: Some(vec!["read_query".into()]),
        read_only: true,
        expires_at: Some(1_800_000_000),
        resources: vec!["memo://insights".into()],
        prompts: vec!["mcp-demo".into()],
    });
    head
}

#[test]
fn a_version_3_head_is_the_version_4_head_without_its_groups() {
    let head = head_with_groups(Vec::new());
    let v4_empty = payload(&head.as_v4());
    let v3 = payload(&head.as_v3());
    // Version 4 appends the groups to the identity: an empty list is one
    // byte (length 0) right before what follows the identity.
    let v4_grants: Vec<_> = head.grants.iter().map(RouteGrant::as_v4).collect();
    let tail = payload(&(&head.request_id, &head.session, head.body, &v4_grants));
    let at = v4_empty.len() - tail.len() - 1;
    assert_eq!(v4_empty[at], 0);
    let mut without = v4_empty.clone();
    without.remove(at);
    assert_eq!(without, v3);
    // With groups, the version 3 (and 2) heads are unchanged.
    let grouped = head_with_groups(vec!["data".into(), "eng".into()]);
    assert_eq!(payload(&grouped.as_v3()), v3);
    assert_eq!(payload(&grouped.as_v2()), payload(&head.as_v2()));
}

#[test]
fn a_version_4_head_is_the_version_5_head_without_resources_and_prompts() {
    let mut head = head_with_groups(vec!["data".into()]);
    let v5 = payload(&StreamOpen::Exchange(head.clone()));
    let v4 = payload(&head.as_v4());
    // Version 5 appends two lists to each grant: its last fields; with
    // none named, each is one byte (length 0).
    for g in &mut head.grants {
        g.resources.clear();
        g.prompts.clear();
    }
    let v5_empty = payload(&StreamOpen::Exchange(head.clone()));
    assert_eq!(&v5_empty[..v5_empty.len() - 2], v4.as_slice());
    assert_eq!(&v5_empty[v5_empty.len() - 2..], &[0, 0]);
    assert_eq!(payload(&head.as_v4()), v4);
    assert_ne!(v5, v5_empty);
    // A version 4 agent decodes it as its own shape: the grant's fields
    // without the lists.
    #[derive(serde::Deserialize)]
    struct GrantV4 {
        id: String,
        _with: String,
        tools: Option<Vec<String>>,
        _read_only: bool,
        _expires_at: Option<i64>,
    }
    #[derive(serde::Deserialize)]
    enum OpenV4 {
        Exchange(HeadV4),
    }
    #[derive(serde::Deserialize)]
    struct HeadV4 {
        _route: String,
        _method: String,
        _path: String,
        _headers: Vec<protocol::Header>,
        _identity: protocol::Identity,
        _request_id: String,
        _session: Option<String>,
        _body: protocol::BodyKind,
        grants: Vec<GrantV4>,
    }
    let grouped = head_with_groups(vec!["data".into()]);
    let OpenV4::Exchange(old) =
        postcard::from_bytes(&payload(&grouped.as_v4())).expect("a version 4 head, whole");
    assert_eq!(old.grants.len(), 1);
    assert_eq!(old.grants[0].id, "a1");
    assert_eq!(old.grants[0].tools, Some(vec!["read_query".to_owned()]));
    roundtrip("exchange", StreamOpen::Exchange(grouped));
}

/// The frame of a head with these groups, as a relay would write it.
fn frame_of(head: &ExchangeHead) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_frame(
        "exchange",
        &StreamOpen::Exchange(head.clone()),
        FrameLimit::HEAD,
        &mut buf,
    )
    .expect("encode");
    buf.to_vec()
}

#[tokio::test]
async fn groups_roundtrip_within_the_bounds() {
    let most: Vec<String> = (0..MAX_GROUPS)
        .map(|i| format!("{i:0>width$}", width = MAX_GROUP_LEN))
        .collect();
    for groups in [
        vec!["data".to_string(), "eng".into(), "Ünïcode group".into()],
        most,
    ] {
        let head = head_with_groups(groups);
        roundtrip("exchange", StreamOpen::Exchange(head.clone()));
        let frame = frame_of(&head);
        // What the fuzzer checks of every frame holds for this one.
        protocol::fuzz::frames(&frame);
        let got = read_exchange(&mut frame.as_slice())
            .await
            .expect("read_exchange");
        assert_eq!(got, head);
    }
}

#[tokio::test]
async fn the_exchange_decoder_refuses_more_groups_than_the_bounds() {
    let too_many: Vec<String> = (0..=MAX_GROUPS).map(|i| format!("g{i}")).collect();
    let frame = frame_of(&head_with_groups(too_many));
    protocol::fuzz::frames(&frame);
    match read_exchange(&mut frame.as_slice()).await {
        Err(FrameError::Decode(DecodeError::TooManyGroups { count, max })) => {
            assert_eq!((count, max), (MAX_GROUPS + 1, MAX_GROUPS));
        }
        other => panic!("{} groups were not refused: {other:?}", MAX_GROUPS + 1),
    }

    let long = "x".repeat(MAX_GROUP_LEN + 1);
    let frame = frame_of(&head_with_groups(vec!["data".into(), long]));
    let err = read_exchange(&mut frame.as_slice())
        .await
        .expect_err("a group too long was not refused");
    assert!(
        matches!(
            err,
            FrameError::Decode(DecodeError::GroupTooLong { len, max })
                if len == MAX_GROUP_LEN + 1 && max == MAX_GROUP_LEN
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "exchange identity with a group of {} bytes; at most {MAX_GROUP_LEN} are allowed",
            MAX_GROUP_LEN + 1
        )
    );
}

#[test]
fn bounded_groups_keep_what_the_tunnel_carries() {
    let mut given: Vec<String> = vec!["y".repeat(MAX_GROUP_LEN + 1)];
    given.extend((0..MAX_GROUPS + 5).map(|i| format!("g{i:04}")));
    let kept = bounded_groups(given.clone());
    assert_eq!(kept.len(), MAX_GROUPS);
    assert_eq!(kept, given[1..=MAX_GROUPS].to_vec());
    let identity = Identity {
        subject: "a@example.com".into(),
        kind: IdentityKind::OAuth,
        credential_name: "c".into(),
        groups: kept,
    };
    identity
        .check_groups()
        .expect("bounded groups pass the check");
}
