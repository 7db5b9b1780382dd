//! The little HTTP/1.1 the replayer speaks: purchase requests written
//! into a buffer, and responses cut one at a time from the bytes read
//! (status line and headers by `httparse`; bodies by `Content-Length` or
//! chunked transfer coding).
//!
//! Why hand-written rather than hyper's client: hyper's client does not
//! pipeline — it sends a request only once the previous answer on that
//! connection is complete — so keeping N requests in flight takes N
//! connections, and each request needs its own task (or future) awaiting
//! its answer. An open-loop generator at 100,000+ requests/s needs the
//! opposite: a few keep-alive connections, every request due written at
//! once (several in one `write`), and answers matched in order as they
//! arrive (HTTP/1.1 pipelining, RFC 9112 §9.3.2). Only what that needs is
//! here: no redirects, no compression, no TLS.

use bytes::{Buf, Bytes, BytesMut};

/// Most header bytes of one response before it is refused.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest body accepted (answers here are small JSON documents).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most headers in one response.
const MAX_HEADERS: usize = 32;

/// Appends `POST /api/seckill/{item}` (no body) to `out`, carrying the
/// buyer's token and the purchase token when there are some.
pub fn encode_purchase(out: &mut Vec<u8>, host: &str, item: &str, tokens: Option<(&str, &str)>) {
    out.extend_from_slice(b"POST /api/seckill/");
    out.extend_from_slice(item.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    if let Some((buyer, purchase)) = tokens {
        out.extend_from_slice(b"\r\nauthorization: Bearer ");
        out.extend_from_slice(buyer.as_bytes());
        out.extend_from_slice(b"\r\nx-purchase-token: ");
        out.extend_from_slice(purchase.as_bytes());
    }
    out.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
}

/// One response, whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The body (de-chunked).
    pub body: Bytes,
    /// The server said it closes the connection after this response
    /// (`Connection: close`, or HTTP/1.0 without keep-alive).
    pub closes: bool,
}

/// Why the bytes read are not a response this client can use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    /// The status line or a header is malformed.
    #[error("malformed response head: {0}")]
    Malformed(httparse::Error),
    /// The head is larger than [`MAX_HEAD_BYTES`].
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// A `Content-Length` that is not a number, or two that disagree.
    #[error("bad content-length")]
    BadContentLength,
    /// A chunk size line or a chunk's end is malformed.
    #[error("malformed chunk")]
    BadChunk,
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("response body larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    /// No `Content-Length` and not chunked: the body would run to the
    /// connection's end, which ends pipelining.
    #[error("a response without a length cannot be pipelined")]
    NoLength,
}

/// How the body is delimited.
enum Framing {
    Empty,
    Length(usize),
    Chunked,
}

/// Cuts the first whole response off `buffer`; `Ok(None)` while more
/// bytes are needed (the buffer is then left as it was). Informational
/// (1xx) responses are skipped.
pub fn take_response(buffer: &mut BytesMut) -> Result<Option<Response>, ResponseError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        let head_len = match head.parse(buffer).map_err(ResponseError::Malformed)? {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial if buffer.len() > MAX_HEAD_BYTES => {
                return Err(ResponseError::HeadTooLarge);
            }
            httparse::Status::Partial => return Ok(None),
        };
        let status = head.code.unwrap_or(0);
        if (100..200).contains(&status) {
            buffer.advance(head_len);
            continue;
        }
        let mut closes = head.version == Some(0);
        let mut length: Option<usize> = None;
        let mut chunked = false;
        for header in head.headers.iter() {
            let value = std::str::from_utf8(header.value).unwrap_or("");
            let has_token = |token: &str| {
                value
                    .split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            };
            if header.name.eq_ignore_ascii_case("content-length") {
                let parsed: usize = value
                    .trim()
                    .parse()
                    .map_err(|_| ResponseError::BadContentLength)?;
                if length.is_some_and(|l| l != parsed) {
                    return Err(ResponseError::BadContentLength);
                }
                length = Some(parsed);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = has_token("chunked");
            } else if header.name.eq_ignore_ascii_case("connection") {
                if has_token("close") {
                    closes = true;
                } else if has_token("keep-alive") {
                    closes = false;
                }
            }
        }
        let framing = if status == 204 || status == 304 {
            Framing::Empty
        } else if chunked {
            Framing::Chunked
        } else {
            match length {
                Some(n) if n > MAX_BODY_BYTES => return Err(ResponseError::BodyTooLarge),
                Some(n) => Framing::Length(n),
                None => return Err(ResponseError::NoLength),
            }
        };
        return Ok(match framing {
            Framing::Empty => {
                buffer.advance(head_len);
                Some(Response {
                    status,
                    body: Bytes::new(),
                    closes,
                })
            }
            Framing::Length(n) => {
                if buffer.len() < head_len + n {
                    return Ok(None);
                }
                let mut whole = buffer.split_to(head_len + n).freeze();
                let body = whole.split_off(head_len);
                Some(Response {
                    status,
                    body,
                    closes,
                })
            }
            Framing::Chunked => match dechunk(&buffer[head_len..])? {
                None => None,
                Some((used, body)) => {
                    buffer.advance(head_len + used);
                    Some(Response {
                        status,
                        body: body.into(),
                        closes,
                    })
                }
            },
        });
    }
}

/// A chunked body from the start of `bytes`: how many bytes it took and
/// the body, or `None` while incomplete.
fn dechunk(bytes: &[u8]) -> Result<Option<(usize, Vec<u8>)>, ResponseError> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (line, size) = match httparse::parse_chunk_size(&bytes[at..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ResponseError::BadChunk),
        };
        at += line;
        let size = usize::try_from(size).map_err(|_| ResponseError::BodyTooLarge)?;
        if size == 0 {
            // Trailers (usually none), then the blank line.
            let mut trailers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            return match httparse::parse_headers(&bytes[at..], &mut trailers) {
                Ok(httparse::Status::Complete((used, _))) => Ok(Some((at + used, body))),
                Ok(httparse::Status::Partial) => Ok(None),
                Err(_) => Err(ResponseError::BadChunk),
            };
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(ResponseError::BodyTooLarge);
        }
        if bytes.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&bytes[at..at + size]);
        if &bytes[at + size..at + size + 2] != b"\r\n" {
            return Err(ResponseError::BadChunk);
        }
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_all(bytes: &[u8]) -> Result<Vec<Response>, ResponseError> {
        let mut buffer = BytesMut::from(bytes);
        let mut responses = Vec::new();
        while let Some(response) = take_response(&mut buffer)? {
            responses.push(response);
        }
        assert!(buffer.is_empty(), "left over: {buffer:?}");
        Ok(responses)
    }

    #[test]
    fn pipelined_responses_come_out_in_order() {
        let bytes = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nabHTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 429 Too Many\r\nContent-Length: 0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 503 Busy\r\ncontent-length: 3\r\nconnection: close\r\n\r\nxyz";
        let got = take_all(bytes).unwrap();
        let summary: Vec<_> = got
            .iter()
            .map(|r| (r.status, r.body.as_ref(), r.closes))
            .collect();
        assert_eq!(
            summary,
            [
                (200, &b"ab"[..], false),
                (429, b"", false),
                (204, b"", false),
                (503, b"xyz", true)
            ]
        );
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let bytes = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
4\r\n{\"st\r\n11;ext=1\r\natus\":\"sold_out\"}\r\n0\r\nx-trailer: 1\r\n\r\n\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let got = take_all(bytes).unwrap();
        assert_eq!(got[0].body.as_ref(), br#"{"status":"sold_out"}"#);
        assert!(got[1].body.is_empty());
    }

    #[test]
    fn every_prefix_is_incomplete_and_leaves_the_buffer_alone() {
        let whole = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        for cut in 0..whole.len() {
            let mut buffer = BytesMut::from(&whole[..cut]);
            assert_eq!(take_response(&mut buffer), Ok(None), "cut at {cut}");
            assert_eq!(buffer.len(), cut);
        }
        let mut buffer = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab"[..]);
        assert_eq!(take_response(&mut buffer), Ok(None));
    }

    #[test]
    fn bad_responses_are_named() {
        let cases: [(&[u8], ResponseError); 5] = [
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
                ResponseError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                ResponseError::BadContentLength,
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", ResponseError::NoLength),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                ResponseError::BadChunk,
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nab\r\n",
                ResponseError::BadChunk,
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(take_all(bytes), Err(expected), "{bytes:?}");
        }
        assert!(matches!(
            take_all(b"NOT HTTP\r\n\r\n"),
            Err(ResponseError::Malformed(_))
        ));
        let mut huge = b"HTTP/1.1 200 OK\r\nx-long: ".to_vec();
        huge.resize(MAX_HEAD_BYTES + 1, b'a');
        assert_eq!(take_all(&huge), Err(ResponseError::HeadTooLarge));
    }

    #[test]
    fn a_purchase_is_one_http11_request() {
        let mut out = Vec::new();
        encode_purchase(
            &mut out,
            "127.0.0.1:8080",
            "sku-1",
            Some(("t.o.k", "p.t.k")),
        );
        encode_purchase(&mut out, "127.0.0.1:8080", "sku-2", None);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut request = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(used) = request.parse(&out).unwrap() else {
            panic!("incomplete")
        };
        assert_eq!(request.method, Some("POST"));
        assert_eq!(request.path, Some("/api/seckill/sku-1"));
        let authorization = request.headers.iter().find(|h| h.name == "authorization");
        assert_eq!(authorization.unwrap().value, b"Bearer t.o.k");
        let pass = request
            .headers
            .iter()
            .find(|h| h.name == "x-purchase-token");
        assert_eq!(pass.unwrap().value, b"p.t.k");
        assert!(out[used..].starts_with(b"POST /api/seckill/sku-2 "));
        assert!(!out[used..].windows(13).any(|w| w == b"authorization"));
    }
}
