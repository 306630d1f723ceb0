//! Replays the committed fuzz corpus (`fuzz/corpus/frames`) and frames of
//! real messages through the same checks the fuzzer runs
//! (`protocol::fuzz::frames`). With `DRAWBRIDGE_WRITE_SEEDS=1` the real
//! frames are (re)written into the corpus as seeds.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use protocol::*;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/frames")
}

fn real_frames() -> Vec<(&'static str, Vec<u8>)> {
    fn frame<T: serde::Serialize>(msg: &T, limit: FrameLimit) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_frame("seed", msg, limit, &mut out).expect("encode");
        out.to_vec()
    }
    let hello = Hello {
        version: PROTOCOL_VERSION,
        credential: "dbat_0123456789abcdef".into(),
        agent_version: "0.1.0".into(),
        instance_id: [7; 16],
        routes: vec![RouteOffer {
            name: "demo".into(),
            kind: UpstreamKind::Sqlite,
            policy: Some("permit (principal, action, resource);".into()),
            accept_tool_changes: true,
        }],
    };
    let head = StreamOpen::Exchange(ExchangeHead {
        route: "demo".into(),
        method: "POST".into(),
        path: "/?q=1".into(),
        headers: vec![Header {
            name: "content-type".into(),
            value: b"application/json".to_vec(),
        }],
        identity: Identity {
            subject: "alice@example.com".into(),
            kind: IdentityKind::OAuth,
            credential_name: "https://claude.ai/oauth/client".into(),
            groups: vec!["data".into(), "eng".into()],
        },
        request_id: "0011223344556677".into(),
        session: Some("s-1".into()),
        body: BodyKind::Length(42),
        grants: vec![RouteGrant {
            id: "a1b2c3".into(),
            with: "@example.com".into(),
            tools: Some(vec!["read_query".into()]),
            read_only: true,
            expires_at: Some(1_800_000_000),
            resources: vec!["memo://insights".into()],
            prompts: vec!["mcp-demo".into()],
        }],
    });
    vec![
        ("hello", frame(&hello, FrameLimit::CONTROL)),
        (
            "refused",
            frame(
                &HelloReply::Refused(Refusal::new(RefusalCode::InvalidPolicy, "line 2")),
                FrameLimit::CONTROL,
            ),
        ),
        (
            "ping",
            frame(&Control::Ping { nonce: 9 }, FrameLimit::CONTROL),
        ),
        (
            "goaway",
            frame(
                &Control::GoAway {
                    reason: GoAwayReason::AgentLeaving,
                    reconnect: false,
                    message: "bye".into(),
                },
                FrameLimit::CONTROL,
            ),
        ),
        ("exchange", frame(&head, FrameLimit::HEAD)),
        (
            "response",
            frame(
                &ResponseHead {
                    status: 200,
                    headers: vec![],
                },
                FrameLimit::HEAD,
            ),
        ),
        ("huge_length", vec![0xff, 0xff, 0xff, 0xff, 0]),
    ]
}

#[test]
fn real_frames_pass_the_fuzz_checks() {
    let write = std::env::var_os("DRAWBRIDGE_WRITE_SEEDS").is_some();
    for (name, bytes) in real_frames() {
        protocol::fuzz::frames(&bytes);
        // Two frames back to back, and a truncated one.
        let mut twice = bytes.clone();
        twice.extend_from_slice(&bytes);
        protocol::fuzz::frames(&twice);
        protocol::fuzz::frames(&bytes[..bytes.len() / 2]);
        if write {
            std::fs::write(corpus().join(format!("seed-{name}")), &bytes).expect("write seed");
        }
    }
}

#[test]
fn the_committed_corpus_replays_cleanly() {
    let entries: Vec<_> = std::fs::read_dir(corpus())
        .expect("fuzz/corpus/frames")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(entries.len() >= 7, "the corpus has its seeds");
    for path in entries {
        let data = std::fs::read(&path).expect("read");
        protocol::fuzz::frames(&data);
    }
}
