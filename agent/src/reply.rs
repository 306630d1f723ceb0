//! Answers the agent writes itself (a refusal, a local error) instead of the
//! local server's.

use http::StatusCode;
use protocol::{FrameLimit, Header, ResponseHead};
use tokio::io::AsyncWriteExt;
use tunnel::SendHalf;

/// How long an answered exchange waits for the relay to acknowledge its tail.
pub(crate) const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Answers the exchange with `status` and a JSON body.
pub(crate) async fn json(send: &mut SendHalf, status: StatusCode, body: &serde_json::Value) {
    json_with(send, status, body, Vec::new()).await
}

/// [`json`] with `extra` headers.
pub(crate) async fn json_with(
    send: &mut SendHalf,
    status: StatusCode,
    body: &serde_json::Value,
    extra: Vec<Header>,
) {
    let body = body.to_string();
    let mut headers = vec![
        Header {
            name: "content-type".into(),
            value: b"application/json".to_vec(),
        },
        Header {
            name: "content-length".into(),
            value: body.len().to_string().into_bytes(),
        },
    ];
    headers.extend(extra);
    let head = ResponseHead {
        status: status.as_u16(),
        headers,
    };
    // The head and the body in one write, so the answer leaves in one packet.
    let mut out = bytes::BytesMut::new();
    if protocol::encode_frame("response", &head, FrameLimit::HEAD, &mut out).is_err() {
        return;
    }
    out.extend_from_slice(body.as_bytes());
    if send.write_all(&out).await.is_ok() {
        let _ = send.finish_acknowledged(ACK_WAIT).await;
    }
}

/// Answers the exchange with no body (202 for a refused body of
/// notifications).
pub(crate) async fn empty(send: &mut SendHalf, status: StatusCode) {
    let head = ResponseHead {
        status: status.as_u16(),
        headers: vec![Header {
            name: "content-length".into(),
            value: b"0".to_vec(),
        }],
    };
    let mut out = bytes::BytesMut::new();
    if protocol::encode_frame("response", &head, FrameLimit::HEAD, &mut out).is_ok()
        && send.write_all(&out).await.is_ok()
    {
        let _ = send.finish_acknowledged(ACK_WAIT).await;
    }
}
