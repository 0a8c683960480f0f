//! A real headless Chromium, driven over WebDriver (Debian's `chromium` and `chromium-driver`,
//! which `scripts/test` installs under CI): the tests click what a person clicks and save what
//! a person would see as screenshots. The W3C WebDriver protocol is JSON over HTTP to
//! `chromedriver` on 127.0.0.1; this is the handful of its endpoints the tests use.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A Chromium session; the browser and its driver stop on drop.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

fn find_program(names: &[&str]) -> Option<PathBuf> {
    for n in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
            let p = Path::new(dir).join(n);
            if p.exists() {
                return Some(p);
            }
        }
    }
    None
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, or returns `None` with a printed reason
    /// when they are not installed (a panic under CI, where `scripts/test` installs them).
    pub fn start() -> Option<Browser> {
        let (Some(driver), Some(chromium)) =
            (find_program(&["chromedriver"]), find_program(&["chromium", "chromium-browser", "google-chrome"]))
        else {
            let msg = "chromium and chromedriver not found (apt-get install chromium chromium-driver; scripts/test does it under CI)";
            assert!(!crate::under_ci(), "{msg}");
            eprintln!("skipping: {msg}");
            return None;
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("addr").port()
        };
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut b = Browser { driver: child, port, session: String::new() };
        let until = Instant::now() + Duration::from_secs(20);
        while b.http("GET", "/status", None).is_err() {
            assert!(Instant::now() < until, "chromedriver did not answer on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().expect("profile dir").keep();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", "--hide-scrollbars", "--no-first-run",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        Some(b)
    }

    fn http(&self, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, Value)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )?;
        // chromedriver keeps the connection open: read the head, then exactly the body.
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let head_end = loop {
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut buf)?;
            if n == 0 {
                break raw.len();
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
        let status: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let length =
            head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = head.contains("transfer-encoding: chunked");
        loop {
            let body = &raw[head_end..];
            let done = match length {
                Some(n) => body.len() >= n,
                None if chunked => body.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if done {
                break;
            }
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        let rest = String::from_utf8_lossy(&raw[head_end..]).into_owned();
        let body = if chunked { dechunk(&rest) } else { rest };
        let v = serde_json::from_str(&body).unwrap_or(Value::Null);
        Ok((status, v))
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.http(method, path, body.as_ref()).unwrap_or_else(|e| panic!("webdriver {path}: {e}"));
        assert!(status == 200, "webdriver {method} {path}: {status} {v}");
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` and waits for it to load.
    pub fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({"url": url})));
    }

    /// The address of the current page.
    pub fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None).as_str().unwrap_or_default().to_string()
    }

    /// The HTML of the current page.
    pub fn source(&self) -> String {
        self.call("GET", &self.s("/source"), None).as_str().unwrap_or_default().to_string()
    }

    /// The first element matching a CSS selector, if there is one.
    pub fn try_find(&self, css: &str) -> Option<Element> {
        let (status, v) = self
            .http("POST", &self.s("/element"), Some(&json!({"using": "css selector", "value": css})))
            .expect("webdriver find");
        (status == 200).then(|| Element(v["value"][ELEMENT].as_str().unwrap_or_default().to_string()))
    }

    /// The first element matching a CSS selector, waiting up to `timeout` for it.
    #[track_caller]
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let until = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_find(css) {
                return e;
            }
            assert!(Instant::now() < until, "no `{css}` on {} within {timeout:?}:\n{}", self.url(), self.source());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every element matching a CSS selector.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self.call("POST", &self.s("/elements"), Some(json!({"using": "css selector", "value": css})));
        v.as_array()
            .map(|a| a.iter().map(|e| Element(e[ELEMENT].as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default()
    }

    /// Clicks an element (and waits for a page it leads to, as WebDriver does).
    pub fn click(&self, e: &Element) {
        self.call("POST", &self.s(&format!("/element/{}/click", e.0)), Some(json!({})));
    }

    /// Types into an input.
    pub fn type_into(&self, e: &Element, text: &str) {
        self.call("POST", &self.s(&format!("/element/{}/clear", e.0)), Some(json!({})));
        self.call("POST", &self.s(&format!("/element/{}/value", e.0)), Some(json!({"text": text})));
    }

    /// Sets an input's value by script (date inputs take their value locale-free this way).
    pub fn set_value(&self, css: &str, value: &str) {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({"script": "document.querySelector(arguments[0]).value = arguments[1];", "args": [css, value]})),
        );
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns what it returns.
    pub fn script(&self, script: &str, args: serde_json::Value) -> serde_json::Value {
        self.call("POST", &self.s("/execute/sync"), Some(json!({"script": script, "args": args})))
    }

    /// The visible text of an element.
    pub fn text(&self, e: &Element) -> String {
        self.call("GET", &self.s(&format!("/element/{}/text", e.0)), None).as_str().unwrap_or_default().to_string()
    }

    /// An attribute of an element.
    pub fn attr(&self, e: &Element, name: &str) -> Option<String> {
        self.call("GET", &self.s(&format!("/element/{}/attribute/{name}", e.0)), None).as_str().map(str::to_string)
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.call("GET", &self.s("/screenshot"), None);
        let png = base64_decode(b64.as_str().unwrap_or_default());
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.http("DELETE", &self.s(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_and_chunks() {
        assert_eq!(super::base64_decode("aGVsbG8gd29ybGQ="), b"hello world");
        assert_eq!(super::dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }
}
