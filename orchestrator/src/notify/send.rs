//! Sending one notification to one target, once: an HTTP POST (webhook, Slack), a line in a
//! file, an SNS publish. [`super::dispatch`] retries what fails here.
//!
//! HTTP goes through reqwest — already in the build for DataFusion's object store, with the same
//! features (rustls, the system's roots), so it adds no crate — over `http://` or `https://`; the
//! whole exchange (resolve, connect, TLS, send, the answer) has one time limit. A 2xx answer is a
//! delivery; 408, 425, 429 and 5xx answers, connection errors and time-outs are worth a retry;
//! any other answer (a redirect included) is final. No error message names the URL (it is a
//! secret): the caller names the target and its environment variable.

use std::io::Write as _;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use super::{Notification, TargetSpec, UrlFromEnv};
use crate::duration::humanize;
use crate::env::Env;

/// A delivery that did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// What went wrong (never the URL).
    pub message: String,
    /// Whether a retry cannot help (a missing variable, a 4xx answer, no such topic).
    pub permanent: bool,
}

impl SendError {
    /// A failure a retry may fix.
    pub fn transient(message: impl Into<String>) -> Self {
        SendError { message: message.into(), permanent: false }
    }

    /// A failure no retry fixes.
    pub fn permanent(message: impl Into<String>) -> Self {
        SendError { message: message.into(), permanent: true }
    }
}

/// The webhook header with the notification's dedupe key (the same header the streaming
/// alerts carry).
pub const DEDUPE_HEADER: &str = cartflow_streaming::handler::DEDUPE_HEADER;

/// The webhook header with the event's name.
pub const EVENT_HEADER: &str = "X-Cartflow-Event";

/// What a delivery needs besides the notification.
#[derive(Debug, Clone, Copy)]
pub struct SendCtx<'a> {
    /// The backend (SNS targets need the aws one).
    pub env: &'a Env,
    /// Where relative file targets resolve.
    pub project_dir: &'a Path,
    /// The time limit of one delivery.
    pub timeout: Duration,
}

/// Delivers `note` to `spec` once.
pub async fn send(spec: &TargetSpec, note: &Notification, ctx: SendCtx<'_>) -> Result<(), SendError> {
    let json = serde_json::to_string(note).map_err(|e| SendError::permanent(format!("encoding: {e}")))?;
    match spec {
        TargetSpec::Webhook(u) => {
            let url = url_from_env(u)?;
            let headers = [(DEDUPE_HEADER, note.dedupe_key.as_str()), (EVENT_HEADER, note.event.name())];
            post_json(&url, &json, &headers, ctx.timeout).await.map_err(|e| in_var(e, u))
        }
        TargetSpec::Slack(u) => {
            let url = url_from_env(u)?;
            let body = serde_json::json!({ "text": slack_text(note) }).to_string();
            let headers = [(DEDUPE_HEADER, note.dedupe_key.as_str())];
            post_json(&url, &body, &headers, ctx.timeout).await.map_err(|e| in_var(e, u))
        }
        TargetSpec::File(f) => {
            let path = ctx.project_dir.join(&f.path);
            append_line(&path, &json).map_err(|e| SendError::transient(format!("{}: {e}", path.display())))
        }
        TargetSpec::Sns(s) => sns(ctx.env, &s.topic_arn, note, &json, ctx.timeout).await,
    }
}

fn in_var(e: SendError, u: &UrlFromEnv) -> SendError {
    SendError { message: format!("the URL in ${}: {}", u.url_env, e.message), ..e }
}

/// The URL in the target's variable: set, and `http://` or `https://`.
fn url_from_env(u: &UrlFromEnv) -> Result<String, SendError> {
    match std::env::var(&u.url_env) {
        Ok(v) if v.trim().is_empty() => {
            Err(SendError::permanent(format!("environment variable {} is empty", u.url_env)))
        }
        Ok(v) if v.trim().starts_with("http://") || v.trim().starts_with("https://") => Ok(v.trim().to_string()),
        Ok(_) => Err(SendError::permanent(format!(
            "environment variable {} does not hold an http:// or https:// URL",
            u.url_env
        ))),
        Err(std::env::VarError::NotPresent) => {
            Err(SendError::permanent(format!("environment variable {} is not set", u.url_env)))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(SendError::permanent(format!("environment variable {} is not UTF-8", u.url_env)))
        }
    }
}

/// Slack's `text`: the message and a link to the log; `&`, `<` and `>` escaped as Slack asks.
pub fn slack_text(note: &Notification) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!("{} <{}|log>", esc(&note.message), note.log_url)
}

fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    // One write of the whole line: appends of concurrent writers do not interleave.
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}

/// The HTTP client of every webhook: no redirects followed (a moved webhook is a
/// configuration to fix), TLS verified against the system's roots (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` are honoured); built once per process.
fn client() -> Result<&'static reqwest::Client, SendError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("cartflow/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| describe(&e))
        })
        .as_ref()
        .map_err(|e| SendError::permanent(format!("cannot set up HTTP: {e}")))
}

/// An error and its causes, one after the other (reqwest's own text alone is "error sending
/// request"); never the URL.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// The innermost cause of an error: what a failed connection says (`Connection refused`,
/// `invalid peer certificate: UnknownIssuer`), without the layers above it (never the URL).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// Checks that `url` is an `http://` or `https://` URL with a host.
pub fn check_url(url: &str) -> Result<reqwest::Url, SendError> {
    let u = reqwest::Url::parse(url).map_err(|_| SendError::permanent("not a valid URL"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(SendError::permanent("not an http:// or https:// URL"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(SendError::permanent("not a valid URL: no host"));
    }
    Ok(u)
}

/// POSTs `body` (JSON) to `url` with extra headers; `Ok` on a 2xx answer within `timeout`.
pub async fn post_json(url: &str, body: &str, headers: &[(&str, &str)], timeout: Duration) -> Result<(), SendError> {
    let url = check_url(url)?;
    let mut req = client()?
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .timeout(timeout);
    for (k, v) in headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes());
        let value = reqwest::header::HeaderValue::from_str(v);
        match (name, value) {
            (Ok(n), Ok(v)) => req = req.header(n, v),
            _ => return Err(SendError::permanent(format!("header `{k}` cannot be sent"))),
        }
    }
    match req.send().await {
        Ok(resp) => classify(resp.status()),
        Err(e) if e.is_timeout() => Err(SendError::transient(format!("no answer within {}", humanize(timeout)))),
        Err(e) if e.is_connect() => Err(SendError::transient(format!("cannot connect: {}", root_cause(&e)))),
        Err(e) => Err(SendError::transient(describe(&e.without_url()))),
    }
}

/// An answer's status as a delivery outcome.
fn classify(status: reqwest::StatusCode) -> Result<(), SendError> {
    let answered = format!("answered {status}");
    match status.as_u16() {
        200..=299 => Ok(()),
        408 | 425 | 429 | 500..=599 => Err(SendError::transient(answered)),
        _ => Err(SendError::permanent(answered)),
    }
}

/// Publishes to SNS: the message is the notification's JSON, the subject its one-line
/// message, and the dedupe key and event are message attributes.
async fn sns(env: &Env, topic_arn: &str, note: &Notification, json: &str, timeout: Duration) -> Result<(), SendError> {
    match env {
        Env::Local(_) => {
            let _ = (topic_arn, note, json, timeout);
            Err(SendError::permanent("an sns target needs the aws backend (--backend aws)"))
        }
        #[cfg(feature = "aws")]
        Env::Aws(aws) => {
            let attributes = [("dedupe_key", note.dedupe_key.as_str()), ("event", note.event.name())];
            let publish = crate::aws::sns::publish(aws, topic_arn, &note.message, json, &attributes);
            match tokio::time::timeout(timeout, publish).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SendError { message: e.message, permanent: e.permanent }),
                Err(_) => Err(SendError::transient(format!("SNS did not answer within {}", humanize(timeout)))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_with_a_host_are_posted_to() {
        check_url("http://127.0.0.1:9000/hooks/a?x=1").expect("http");
        check_url("https://hooks.slack.com/services/T/B/X").expect("https");
        check_url("http://[::1]:81/").expect("v6");
        for bad in ["ftp://host/x", "http://", "host/x", "https://:80/", "http://a b/"] {
            let e = check_url(bad).expect_err(bad);
            assert!(e.permanent, "{bad}");
            assert!(!e.message.contains("host/") && !e.message.contains("a b"), "no URL in the message: {}", e.message);
        }
    }

    /// An HTTP receiver on 127.0.0.1: each connection gets the next answer (`None`: no answer,
    /// the connection held open); every request it read is kept.
    fn receiver(answers: Vec<Option<&'static str>>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://127.0.0.1:{}/hook?x=1", listener.local_addr().expect("addr").port());
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = got.clone();
        std::thread::spawn(move || {
            for (answer, conn) in answers.into_iter().zip(listener.incoming()) {
                let mut s = conn.expect("accept");
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !String::from_utf8_lossy(&req).ends_with('}') {
                    let n = s.read(&mut buf).expect("read");
                    if n == 0 {
                        break;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                kept.lock().expect("lock").push(String::from_utf8_lossy(&req).into_owned());
                match answer {
                    Some(status) => {
                        let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                    None => std::thread::sleep(Duration::from_secs(5)),
                }
            }
        });
        (url, got)
    }

    #[tokio::test]
    async fn a_post_is_delivered_on_2xx_retried_on_500_and_final_on_404() {
        let (url, got) =
            receiver(vec![Some("500 Oops"), Some("204 No Content"), Some("404 Not Found"), Some("302 Found")]);
        let headers = [(DEDUPE_HEADER, "r@x/t/1/failure")];
        let e = post_json(&url, r#"{"a":1}"#, &headers, Duration::from_secs(5)).await.expect_err("500");
        assert_eq!(e, SendError::transient("answered 500 Internal Server Error"));
        post_json(&url, r#"{"a":1}"#, &headers, Duration::from_secs(5)).await.expect("204");
        let e = post_json(&url, r#"{"a":1}"#, &headers, Duration::from_secs(5)).await.expect_err("404");
        assert_eq!(e, SendError::permanent("answered 404 Not Found"));
        let e = post_json(&url, r#"{"a":1}"#, &headers, Duration::from_secs(5)).await.expect_err("302");
        assert!(e.permanent, "a redirect is not followed: {e}");
        let req = got.lock().expect("lock")[1].to_ascii_lowercase();
        assert!(req.starts_with("post /hook?x=1 http/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nx-cartflow-dedupe-key: r@x/t/1/failure\r\n"), "{req}");
        assert!(req.contains("\r\ncontent-type: application/json\r\n"), "{req}");
        assert!(req.ends_with("\r\n\r\n{\"a\":1}"), "{req}");
    }

    #[tokio::test]
    async fn a_target_that_hangs_or_is_gone_is_a_retry_within_the_time_limit() {
        let (url, _got) = receiver(vec![None]);
        let started = std::time::Instant::now();
        let e = post_json(&url, "{}", &[], Duration::from_millis(300)).await.expect_err("hangs");
        assert_eq!(e, SendError::transient("no answer within 0.3s"));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        let gone = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let e =
            post_json(&format!("http://127.0.0.1:{gone}/"), "{}", &[], Duration::from_secs(2)).await.expect_err("gone");
        assert!(!e.permanent && e.message.starts_with("cannot connect"), "{e}");
        assert!(!e.message.contains("127.0.0.1"), "no URL in the message: {e}");
    }

    #[test]
    fn slack_text_escapes_what_slack_asks_and_links_the_log() {
        let interval =
            crate::schedule::DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("d"));
        let n = Notification::new(
            &super::super::Happened {
                event: super::super::Event::Failure,
                dag_id: "d",
                run_id: "d@2019-10-01T00:00:00Z",
                interval: &interval,
                task: Some("t"),
                attempt: 1,
                error: Some("a < b & c > d"),
                at: chrono::Utc::now(),
            },
            "http://ui",
        );
        assert_eq!(
            slack_text(&n),
            "cartflow: task `t` of d@2019-10-01T00:00:00Z failed (attempt 1): a &lt; b &amp; c &gt; d <http://ui/runs/d@2019-10-01T00:00:00Z/tasks/t/attempts/1|log>"
        );
    }
}
