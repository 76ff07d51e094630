//! A minimal keep-alive HTTP/1.1 client for load generation.
//!
//! The request is serialised once and written as is on every send; a response is read
//! with `httparse` and its body skipped by `Content-Length` or chunked framing. Doing
//! little per request keeps the generator's own CPU use low: it shares the 2 cores with
//! the servers it measures.

use std::io;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where requests go: `http://host:port/path?query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`, to connect to and for the `Host` header.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("{url:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            bail!("{url:?}: no host");
        }
        let authority = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Target {
            authority,
            path: path.to_owned(),
        })
    }
}

/// A header given on the command line as `Name: value`.
pub fn parse_header(s: &str) -> anyhow::Result<(String, String)> {
    let (name, value) = s
        .split_once(':')
        .with_context(|| format!("header {s:?} is not `Name: value`"))?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        bail!("header {s:?} has no valid name");
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// The bytes of one request, `Content-Length` set from `body`.
pub fn request_bytes(
    method: &str,
    target: &Target,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n",
        path = target.path,
        host = target.authority
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// What one exchange returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The server will close the connection: open a new one for the next request.
    pub close: bool,
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

impl Connection {
    pub async fn connect(authority: &str) -> io::Result<Connection> {
        let stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(8 * 1024),
        })
    }

    /// Connects, and returns with the connection a second handle on the same socket for
    /// writing from another thread (the open-loop pacer), so requests leave at their
    /// intended time without waking the task that reads the answers.
    pub async fn connect_split(authority: &str) -> io::Result<(Connection, std::net::TcpStream)> {
        let stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        let std_stream = stream.into_std()?;
        let writer = std_stream.try_clone()?;
        let stream = TcpStream::from_std(std_stream)?;
        Ok((
            Connection {
                stream,
                buf: Vec::with_capacity(8 * 1024),
            },
            writer,
        ))
    }

    /// Sends `request` and reads the whole response.
    pub async fn exchange(&mut self, request: &[u8]) -> io::Result<Answer> {
        self.stream.write_all(request).await?;
        self.read_response().await
    }

    /// Reads one whole response.
    pub async fn read_response(&mut self) -> io::Result<Answer> {
        self.buf.clear();
        let (status, head_len, framing, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 48];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = response.code.unwrap_or(0);
                    let mut framing = None;
                    let mut close = response.version == Some(0);
                    for h in response.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let len = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .ok_or_else(|| invalid("bad Content-Length"))?;
                            framing = Some(Framing::Length(len));
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                            && contains_token(h.value, b"chunked")
                        {
                            framing = Some(Framing::Chunked);
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = contains_token(h.value, b"close");
                        }
                    }
                    let framing = match framing {
                        Some(f) => f,
                        None if status == 204 || status == 304 || status < 200 => {
                            Framing::Length(0)
                        }
                        None => Framing::UntilClose,
                    };
                    break (status, head_len, framing, close);
                }
                Ok(httparse::Status::Partial) => self.fill().await?,
                Err(e) => return Err(invalid(&format!("bad response: {e}"))),
            }
        };
        match framing {
            Framing::Length(len) => {
                while self.buf.len() < head_len + len {
                    self.fill().await?;
                }
            }
            Framing::Chunked => self.skip_chunked(head_len).await?,
            Framing::UntilClose => {
                while self.stream.read_buf(&mut self.buf).await? > 0 {}
                return Ok(Answer {
                    status,
                    close: true,
                });
            }
        }
        Ok(Answer { status, close })
    }

    /// Reads more bytes; the end of the stream here is an error.
    async fn fill(&mut self) -> io::Result<()> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        match self.stream.read_buf(&mut self.buf).await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    async fn skip_chunked(&mut self, mut at: usize) -> io::Result<()> {
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf[at..], b"\r\n") {
                    break at + i;
                }
                self.fill().await?;
            };
            let size_text = std::str::from_utf8(&self.buf[at..line_end])
                .map_err(|_| invalid("bad chunk size"))?;
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size =
                usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
            at = line_end + 2;
            if size == 0 {
                // Trailers, if any, end with an empty line.
                loop {
                    if self.buf[at..].starts_with(b"\r\n") {
                        return Ok(());
                    }
                    if find(&self.buf[at..], b"\r\n\r\n").is_some() {
                        return Ok(());
                    }
                    self.fill().await?;
                }
            }
            while self.buf.len() < at + size + 2 {
                self.fill().await?;
            }
            at += size + 2;
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080/v1/namespaces/bench/keys/k?x=1").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path, "/v1/namespaces/bench/keys/k?x=1");
        assert_eq!(Target::parse("http://localhost").unwrap().path, "/");
        assert_eq!(
            Target::parse("http://localhost").unwrap().authority,
            "localhost:80"
        );
        assert!(Target::parse("https://x/").is_err());
        assert!(Target::parse("http:///x").is_err());
    }

    #[test]
    fn headers_and_requests() {
        assert_eq!(
            parse_header("Authorization: Bearer a:b").unwrap(),
            ("Authorization".into(), "Bearer a:b".into())
        );
        assert!(parse_header("nonsense").is_err());
        let t = Target::parse("http://127.0.0.1:1/k").unwrap();
        let get = request_bytes("GET", &t, &[("A".into(), "b".into())], b"");
        assert_eq!(get, b"GET /k HTTP/1.1\r\nHost: 127.0.0.1:1\r\nA: b\r\n\r\n");
        let put = request_bytes("PUT", &t, &[], b"xyz");
        assert_eq!(
            put,
            b"PUT /k HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Length: 3\r\n\r\nxyz"
        );
    }

    /// A server that answers each request with the next canned response, split into
    /// small writes so the client has to reassemble it.
    async fn serve(responses: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            for response in responses {
                let mut seen = Vec::new();
                while find(&seen, b"\r\n\r\n").is_none() {
                    let n = socket.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                for piece in response.chunks(7) {
                    socket.write_all(piece).await.unwrap();
                    socket.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        address
    }

    #[tokio::test]
    async fn reads_length_chunked_and_empty_responses_on_one_connection() {
        let address = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        ])
        .await;
        let target = Target::parse(&format!("http://{address}/")).unwrap();
        let request = request_bytes("GET", &target, &[], b"");
        let mut conn = Connection::connect(&target.authority).await.unwrap();
        let statuses = [(200, false), (200, false), (204, false), (404, true)];
        for (status, close) in statuses {
            let answer = conn.exchange(&request).await.unwrap();
            assert_eq!(answer, Answer { status, close });
        }
        assert!(conn.exchange(&request).await.is_err());
    }
}
