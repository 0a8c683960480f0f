//! `cartflow ui`: the web UI, served by the same binary on the engine's tokio runtime.
//!
//! Pages are rendered on the server (see [`html`]) from the run store and the compiled DAGs; the
//! one script and the one style sheet are embedded in the binary, so it works offline. Actions
//! (run an interval, rerun a task and its downstream, rerun what failed, backfill, cancel) show
//! a preview first and then call the same library functions as the CLI, in this process.
//!
//! Security: it binds 127.0.0.1 by default, and a non-loopback address needs a token
//! (`--token` or `CARTFLOW_UI_TOKEN`); a loopback server answers only requests whose `Host` is
//! a loopback name (no DNS rebinding); every POST carries the server's CSRF token and a
//! cross-origin `Origin` is refused; path parameters are checked against the store and the
//! DAGs (anything else is a 404); no environment value, secret or credential is rendered.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::engine::executor::Pools;
use crate::engine::store::{RunStore, StoreError};
use crate::env::{Backend, Env};
use crate::project::Project;

mod actions;
pub mod html;
mod lake;
mod pages;
mod query;
mod realtime;
mod svg;

/// How the server is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where it listens.
    pub bind: SocketAddr,
    /// The tokens a client may present (one is required for a non-loopback bind): `SECRET`, or
    /// `NAME:SECRET` to have the audit log name who used it.
    pub tokens: Vec<String>,
    /// The backend the actions run on.
    pub backend: Backend,
    /// How long a query of the query page may run before it is stopped.
    pub query_timeout: std::time::Duration,
}

/// The query page's default time limit: 5 minutes.
pub const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// A non-loopback address without a token.
    #[error(
        "--bind {0} is not a loopback address: anyone who can reach it could run and cancel DAGs; set --token (or CARTFLOW_UI_TOKEN), or bind 127.0.0.1"
    )]
    NeedsToken(SocketAddr),
    /// An empty or too short token.
    #[error(
        "a UI token's secret must be at least 16 characters (it is the only thing between the network and your lake)"
    )]
    WeakToken,
    /// Two tokens with the same secret.
    #[error("two UI tokens have the same secret: give each person a secret of their own")]
    SharedToken,
    /// The address is taken or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("serving the UI: {0}")]
    Serve(#[source] std::io::Error),
}

impl UiError {
    /// Whether this is the user's to fix (exit 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, UiError::NeedsToken(_) | UiError::WeakToken | UiError::SharedToken)
    }
}

/// A DAG, run or task id as it may appear in a path: anything else names nothing (404).
pub(crate) fn check_id(what: &str, s: &str) -> Result<(), PageError> {
    let ok = !s.is_empty()
        && s.len() <= 200
        && !s.starts_with('.')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok { Ok(()) } else { Err(PageError::NotFound(format!("there is no {what} `{s}`"))) }
}

/// A run id (`dag@2019-10-01T00:00:00Z`) as it may appear in a path.
pub(crate) fn check_run_id(s: &str) -> Result<(), PageError> {
    let bad = || PageError::NotFound(format!("there is no run `{s}`"));
    let (dag, at) = s.split_once('@').ok_or_else(bad)?;
    check_id("run", dag).map_err(|_| bad())?;
    if at.is_empty()
        || at.len() > 40
        || !at.chars().all(|c| c.is_ascii_digit() || matches!(c, 'T' | 'Z' | ':' | '-' | '+' | '.'))
    {
        return Err(bad());
    }
    Ok(())
}

/// The DAGs folder, compiled (on a blocking thread: it reads files); compiled again only when
/// a file under it, or a file its tasks' configs name (SQL, recipes, rules: `DagSet::read`),
/// changed (appeared, went, or has another modification time or size).
pub(crate) async fn load_dags(ui: &Arc<Ui>) -> Result<Arc<crate::dag::DagSet>, PageError> {
    let ui = ui.clone();
    tokio::task::spawn_blocking(move || {
        let snap = ui.project.dags_snapshot();
        if let Some((seen, named, set)) = ui.dags.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && *seen == snap
            && *named == stamps(&set.read)
        {
            return Ok(set.clone());
        }
        let set = Arc::new(ui.project.load().map_err(|e| PageError::Internal(format!("{e:#}")))?);
        *ui.dags.lock().unwrap_or_else(|p| p.into_inner()) = Some((snap, stamps(&set.read), set.clone()));
        Ok(set)
    })
    .await
    .map_err(|e| PageError::Internal(e.to_string()))?
}

/// Refuses a bind that would expose the UI without a token.
pub fn check_options(o: &Options) -> Result<(), UiError> {
    let tokens: Vec<Token> = o.tokens.iter().map(|t| Token::parse(t)).collect();
    if tokens.iter().any(|t| t.secret.chars().count() < 16) {
        return Err(UiError::WeakToken);
    }
    // Two names with one secret: whose would the audit log name?
    if tokens.iter().enumerate().any(|(i, t)| tokens[..i].iter().any(|u| u.secret == t.secret)) {
        return Err(UiError::SharedToken);
    }
    if !o.bind.ip().is_loopback() && o.tokens.is_empty() {
        return Err(UiError::NeedsToken(o.bind));
    }
    Ok(())
}

/// A token the UI accepts, and the name the audit log gives who presents it.
#[derive(Debug, Clone)]
struct Token {
    name: Option<String>,
    secret: String,
    /// The whole spec as given (`NAME:SECRET`): presented whole, it is accepted too (a bare
    /// token that happens to contain a `:` keeps working).
    spec: String,
}

impl Token {
    /// `NAME:SECRET` (NAME: 1 to 64 letters, digits, `_`, `.`, `-`) or a bare `SECRET`.
    fn parse(spec: &str) -> Token {
        match spec.split_once(':') {
            Some((name, secret))
                if (1..=64).contains(&name.len())
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) =>
            {
                Token { name: Some(name.to_string()), secret: secret.to_string(), spec: spec.to_string() }
            }
            _ => Token { name: None, secret: spec.to_string(), spec: spec.to_string() },
        }
    }
}

tokio::task_local! {
    /// Who sent the request being handled (set by [`guard`]): the name of the token presented.
    static WHO: Option<String>;
}

/// When each file was modified and its size (`None`: it does not exist).
type Stamps = Vec<Option<(std::time::SystemTime, u64)>>;

fn stamps(paths: &[std::path::PathBuf]) -> Stamps {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).ok().map(|m| (m.modified().unwrap_or(std::time::UNIX_EPOCH), m.len())))
        .collect()
}

/// The DAGs folder's files (name, modification time, size), the stamps of the files their
/// configs name, and what they compiled to.
type DagCache = (Vec<(std::path::PathBuf, std::time::SystemTime, u64)>, Stamps, Arc<crate::dag::DagSet>);

/// What every handler shares.
#[derive(Debug)]
pub struct Ui {
    project: Project,
    env: Env,
    pools: Arc<Pools>,
    backend: Backend,
    tokens: Vec<Token>,
    loopback: bool,
    csrf: String,
    store: Mutex<Option<RunStore>>,
    /// The compiled DAGs and the snapshot of the files they came from.
    dags: Mutex<Option<DagCache>>,
    /// The query page's last results (paged and downloaded without running again).
    results: Mutex<query::Kept>,
    actions: Mutex<Vec<Arc<actions::Action>>>,
    shutdown: CancellationToken,
    query_timeout: std::time::Duration,
}

impl Ui {
    /// The UI's state for `project`, its actions running on `env`.
    pub fn new(project: Project, env: Env, options: &Options, shutdown: CancellationToken) -> Arc<Ui> {
        Arc::new(Ui {
            pools: project.pools(),
            project,
            env,
            backend: options.backend,
            query_timeout: options.query_timeout,
            tokens: options.tokens.iter().map(|t| Token::parse(t)).collect(),
            loopback: options.bind.ip().is_loopback(),
            csrf: random_hex(16),
            store: Mutex::new(None),
            dags: Mutex::new(None),
            results: Mutex::new(query::Kept::new()),
            actions: Mutex::new(Vec::new()),
            shutdown,
        })
    }

    /// Runs `f` with the run store (opened once, kept) on a blocking thread.
    async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&RunStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, PageError> {
        let ui = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = ui.store.lock().unwrap_or_else(|p| p.into_inner());
            let store = match guard.take() {
                Some(store) => guard.insert(store),
                None => guard.insert(RunStore::open(&ui.project.state)?),
            };
            f(store)
        })
        .await
        .map_err(|e| PageError::Internal(format!("a page task failed: {e}")))?
        .map_err(|e| PageError::Internal(format!("{e}")))
    }

    /// Who the audit log says did what this UI did: the local user, marked `(token)` when the
    /// server asks for one (whoever holds it).
    fn who(&self) -> String {
        let user = crate::engine::store::local_user();
        if self.tokens.is_empty() {
            return user;
        }
        match WHO.try_with(Clone::clone).ok().flatten() {
            Some(name) => format!("{name} (token)"),
            None => format!("{user} (token)"),
        }
    }

    /// The AWS region the aws backend's clients use (none on the local backend).
    fn aws_region(&self) -> Option<String> {
        match &self.env {
            #[cfg(feature = "aws")]
            Env::Aws(aws) => Some(aws.region()),
            Env::Local(_) => None,
        }
    }

    fn frame(&self, refresh: bool) -> html::Frame<'_> {
        html::Frame {
            project: self.project.dir.to_str().unwrap_or("(project)"),
            backend: match self.backend {
                Backend::Local => "local",
                Backend::Aws => "aws",
            },
            refresh,
        }
    }
}

/// A page that could not be rendered.
#[derive(Debug)]
pub enum PageError {
    /// No such DAG, run, task or attempt (or a path parameter that cannot name one).
    NotFound(String),
    /// The request is wrong (a bad date, an unknown param): shown with the message.
    BadRequest(String),
    /// Refused (CSRF, origin).
    Forbidden(String),
    /// Something broke.
    Internal(String),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, msg) = match self {
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Cannot do that", m),
            PageError::Forbidden(m) => (StatusCode::FORBIDDEN, "Forbidden", m),
            PageError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", m),
        };
        let frame = html::Frame { project: "", backend: "", refresh: false };
        let body = format!(r#"<pre class="error">{}</pre><p><a href="/">Back to the DAGs</a></p>"#, html::esc(&msg));
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html::page(&frame, html::Nav::None, title, &body),
        )
            .into_response()
    }
}

/// The router of the UI over `ui`.
pub fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route("/", get(pages::dags))
        .route("/dags/{dag}", get(pages::grid))
        .route("/runs/{run}", get(pages::run))
        .route("/runs/{run}/tasks/{task}", get(pages::task))
        .route("/runs/{run}/tasks/{task}/attempts/{attempt}", get(pages::attempt))
        .route("/runs/{run}/tasks/{task}/attempts/{attempt}/log", get(pages::log_text))
        .route("/runs/{run}/tasks/{task}/attempts/{attempt}/log/stream", get(pages::log_stream))
        .route("/backfills", get(actions::backfills))
        .route("/lake", get(lake::page))
        .route("/lake/{name}", get(lake::node))
        .route("/insights", get(lake::insights))
        .route("/insights/dashboard", get(lake::dashboard))
        .route("/realtime", get(realtime::page))
        .route("/query", get(query::page).post(query::run))
        .route("/actions", get(actions::list))
        .route("/actions/{id}", get(actions::show))
        .route("/actions/{id}/cancel", post(actions::cancel))
        .route("/preview", post(actions::preview))
        .route("/start", post(actions::start))
        .route("/mark", post(actions::mark))
        .route("/cancel", post(actions::cancel_run))
        .route("/pause", post(actions::pause))
        .route("/static/app.css", get(|| async { asset("text/css; charset=utf-8", include_str!("assets/app.css")) }))
        .route(
            "/static/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", include_str!("assets/app.js")) }),
        )
        .fallback(|| async { PageError::NotFound("there is no such page".into()) })
        .layer(middleware::from_fn_with_state(ui.clone(), guard))
        .with_state(ui)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=3600")], body).into_response()
}

/// Serves the UI on `options.bind` until `shutdown` fires; `ready` hears the address it listens
/// on (a port of 0 picks one). Actions still running are cancelled on shutdown.
pub async fn serve(
    project: Project,
    env: Env,
    options: Options,
    shutdown: CancellationToken,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), UiError> {
    check_options(&options)?;
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|source| UiError::Bind { addr: options.bind, source })?;
    let addr = listener.local_addr().map_err(|source| UiError::Bind { addr: options.bind, source })?;
    let ui = Ui::new(project, env, &options, shutdown.clone());
    ready(addr);
    let stop = shutdown.clone();
    let served =
        axum::serve(listener, router(ui.clone())).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    actions::cancel_all(&ui).await;
    served.map_err(UiError::Serve)
}

/// Token, host and origin checks before any handler; security headers on every response,
/// refusals included (a handler may set a narrower frame or content policy of its own).
async fn guard(State(ui): State<Arc<Ui>>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let mut resp = match refusal(&ui, &req) {
        Err(r) => r,
        Ok(who) => {
            let mut r = WHO.scope(who, next.run(req)).await;
            // How long the page took on the server (a browser's devtools show it; the UI benchmark reads it).
            if let Ok(v) = HeaderValue::from_str(&format!("app;dur={:.3}", started.elapsed().as_secs_f64() * 1e3)) {
                r.headers_mut().insert("server-timing", v);
            }
            r
        }
    };
    let h = resp.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
        );
    }
    if !h.contains_key(header::X_FRAME_OPTIONS) {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    resp
}

/// Why `req` is refused before any handler sees it (wrong host, no token, another origin); or
/// the name of the token it presented.
// The refusal is the response the guard returns at once: boxing it would only add a move.
#[allow(clippy::result_large_err)]
fn refusal(ui: &Ui, req: &Request) -> Result<Option<String>, Response> {
    let headers = req.headers();
    if ui.loopback && !host_is_loopback(headers) {
        return Err(
            (StatusCode::MISDIRECTED_REQUEST, "this UI answers only to 127.0.0.1, localhost or [::1]").into_response()
        );
    }
    let mut who = None;
    if !ui.tokens.is_empty() {
        // Which token `p` is (every one compared, in constant time each).
        let matching = |p: &str| {
            ui.tokens.iter().fold(None, |found, t| {
                let this =
                    constant_eq(p.as_bytes(), t.secret.as_bytes()) | constant_eq(p.as_bytes(), t.spec.as_bytes());
                if this { Some(t) } else { found }
            })
        };
        // The cookie holds the token percent-encoded (a cookie value cannot hold every character).
        let presented =
            bearer(headers).map(str::to_string).or_else(|| cookie(headers, "cartflow_ui").and_then(percent_decode));
        if let Some(t) = presented.as_deref().and_then(matching) {
            who = t.name.clone();
        } else {
            // `?token=…` on a GET sets the cookie and sends the browser on without it.
            if req.method() == Method::GET
                && let Some(t) = req.uri().query().and_then(|q| query_value(q, "token")).and_then(percent_decode)
                && matching(&t).is_some()
            {
                let cookie = format!("cartflow_ui={}; HttpOnly; SameSite=Strict; Path=/", html::qv(&t));
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::SEE_OTHER;
                r.headers_mut().insert(
                    header::LOCATION,
                    HeaderValue::from_str(req.uri().path()).unwrap_or(HeaderValue::from_static("/")),
                );
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                return Err(r);
            }
            return Err((
                StatusCode::UNAUTHORIZED,
                "this UI needs its token: open it with ?token=… or send Authorization: Bearer …",
            )
                .into_response());
        }
    }
    if req.method() == Method::POST && !same_origin(headers) {
        return Err(PageError::Forbidden("a request from another origin was refused".into()).into_response());
    }
    Ok(who)
}

fn host_is_loopback(h: &HeaderMap) -> bool {
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else { return false };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An `Origin` header, when present, names this server (`Host`).
fn same_origin(h: &HeaderMap) -> bool {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    origin.split_once("://").is_some_and(|(_, rest)| rest == host)
}

fn bearer(h: &HeaderMap) -> Option<&str> {
    h.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

fn cookie<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

fn query_value<'q>(q: &'q str, name: &str) -> Option<&'q str> {
    q.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

/// A query-string or cookie value with its `%XX` escapes (and `+` for a space) decoded; `None`
/// when an escape is broken or the bytes are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Compares two secrets in time that does not depend on where they differ.
fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `n` random bytes from the kernel, as hex.
fn random_hex(n: usize) -> String {
    use std::io::Read as _;
    let mut buf = vec![0u8; n];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).is_err() {
        // No /dev/urandom: the clock and the pid, mixed (still unguessable enough from outside).
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
                ^ u128::from(std::process::id());
        let mut rng = fastrand::Rng::with_seed(seed as u64);
        rng.fill(&mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A form's CSRF token is this server's, or the request is refused (403) with what to do.
fn require_csrf(ui: &Ui, sent: &str) -> Result<(), PageError> {
    if constant_eq(sent.as_bytes(), ui.csrf.as_bytes()) {
        Ok(())
    } else {
        Err(PageError::Forbidden(
            "the form's CSRF token is missing or not this server's: reload the page and try again".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(bind: &str, token: Option<&str>) -> Options {
        Options {
            bind: bind.parse().expect("addr"),
            tokens: token.map(str::to_string).into_iter().collect(),
            backend: Backend::Local,
            query_timeout: QUERY_TIMEOUT,
        }
    }

    #[test]
    fn a_non_loopback_bind_needs_a_token_of_some_length() {
        assert!(check_options(&opts("127.0.0.1:8787", None)).is_ok());
        assert!(check_options(&opts("[::1]:8787", None)).is_ok());
        assert!(matches!(check_options(&opts("0.0.0.0:8787", None)), Err(UiError::NeedsToken(_))));
        assert!(matches!(check_options(&opts("0.0.0.0:8787", Some("short"))), Err(UiError::WeakToken)));
        assert!(check_options(&opts("0.0.0.0:8787", Some("a-long-enough-token"))).is_ok());
        assert!(check_options(&opts("0.0.0.0:8787", Some("alice:a-long-enough-token"))).is_ok());
        let mut two = opts("0.0.0.0:8787", Some("alice:a-long-enough-token"));
        two.tokens.push("bob:a-long-enough-token".into());
        assert!(matches!(check_options(&two), Err(UiError::SharedToken)), "one secret, two names");
        assert!(
            matches!(
                check_options(&opts("0.0.0.0:8787", Some("alice-has-a-long-name:short"))),
                Err(UiError::WeakToken)
            ),
            "the secret after the name is what must be long"
        );
    }

    #[test]
    fn a_token_may_carry_the_name_the_audit_log_gives_who_presents_it() {
        let t = Token::parse("alice:s3cret-of-enough-length");
        assert_eq!((t.name.as_deref(), t.secret.as_str()), (Some("alice"), "s3cret-of-enough-length"));
        let bare = Token::parse("s3cret-of-enough-length");
        assert_eq!((bare.name, bare.secret.as_str()), (None, "s3cret-of-enough-length"));
        // Not a name: the whole is the secret.
        for spec in [":leading-colon-secret", "has space:secret-of-length", "a/b:secret-of-enough"] {
            assert_eq!(Token::parse(spec).secret, spec);
        }
    }

    #[test]
    fn hosts_and_origins() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8787"));
        assert!(host_is_loopback(&h));
        h.insert(header::HOST, HeaderValue::from_static("localhost:8787"));
        assert!(host_is_loopback(&h));
        h.insert(header::HOST, HeaderValue::from_static("[::1]:8787"));
        assert!(host_is_loopback(&h));
        h.insert(header::HOST, HeaderValue::from_static("evil.example:8787"));
        assert!(!host_is_loopback(&h));
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8787"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8787"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h));
        assert!(constant_eq(b"abc", b"abc") && !constant_eq(b"abc", b"abd") && !constant_eq(b"abc", b"ab"));
        assert_eq!(random_hex(16).len(), 32);
        assert_eq!(percent_decode("a%2Fb+c%3d").as_deref(), Some("a/b c="));
        assert_eq!(percent_decode("plain-token_1").as_deref(), Some("plain-token_1"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn path_parameters_that_cannot_name_anything_are_refused() {
        assert!(check_id("DAG", "ecommerce_daily").is_ok());
        for bad in ["", "..", "../../etc/passwd", ".hidden", "a/b", "a b", "<x>", "a%2Fb"] {
            assert!(check_id("DAG", bad).is_err(), "{bad}");
        }
        assert!(check_run_id("ecommerce_daily@2019-10-01T00:00:00Z").is_ok());
        for bad in ["../../etc/passwd", "x@../y", "@2019", "x@", "x@2019-10-01 00:00", "x"] {
            assert!(check_run_id(bad).is_err(), "{bad}");
        }
    }
}
