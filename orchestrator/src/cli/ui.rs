//! `cartflow ui`: the web UI of the project, until Ctrl-C.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use cartflow::project::Project;
use cartflow::ui;

use super::{BackendArg, usage, with_signals};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to listen. A non-loopback address needs --token.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub bind: SocketAddr,
    /// A token clients must present (open the UI once with `?token=…`; scripts send
    /// `Authorization: Bearer …`): `NAME:SECRET`, and the audit log names NAME as who did what,
    /// or a bare SECRET; the secret at least 16 characters. Repeat it for several people
    /// (`CARTFLOW_UI_TOKEN`: comma-separated).
    #[arg(long, env = "CARTFLOW_UI_TOKEN", hide_env_values = true, value_delimiter = ',')]
    pub token: Vec<String>,
    /// A file of tokens, one per line (`NAME:SECRET` or `SECRET`; blank lines and `#` comments
    /// skipped): unlike --token and CARTFLOW_UI_TOKEN, which processes of the same user can read
    /// in /proc, the secrets stay in the file (make it readable by you only).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
    /// How long a query of the query page may run before it is stopped.
    #[arg(long, default_value = "5m", value_parser = super::parse_duration)]
    pub query_timeout: std::time::Duration,
    #[command(flatten)]
    pub backend: BackendArg,
}

pub fn run(p: &Project, a: Args) -> anyhow::Result<ExitCode> {
    serve(p, a, "")
}

/// Serves the UI (also after `cartflow demo --ui`); `note` is printed beside the address.
pub fn serve(p: &Project, mut a: Args, note: &str) -> anyhow::Result<ExitCode> {
    if let Some(path) = &a.token_file {
        let text = std::fs::read_to_string(path).map_err(|e| usage(format!("--token-file {}: {e}", path.display())))?;
        let lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let before = a.token.len();
        a.token.extend(lines.map(str::to_string));
        if a.token.len() == before {
            return Err(usage(format!("--token-file {}: no token in it", path.display())));
        }
    }
    let options =
        ui::Options { bind: a.bind, tokens: a.token, backend: a.backend.backend, query_timeout: a.query_timeout };
    ui::check_options(&options).map_err(|e| usage(e.to_string()))?;
    if options.query_timeout.is_zero() {
        return Err(usage("--query-timeout must be longer than 0s"));
    }
    let token = !options.tokens.is_empty();
    let r = with_signals(|cancel| async move {
        let env = p.env(options.backend).await?;
        let served = ui::serve(p.clone(), env, options, cancel, |addr| {
            let login = if token { "?token=…" } else { "" };
            println!("cartflow ui: http://{addr}/{login}{note} (Ctrl-C to stop)");
            let _ = std::io::stdout().flush();
        })
        .await;
        anyhow::Ok(served)
    })??;
    match r {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.is_usage() => Err(usage(e.to_string())),
        Err(e) => Err(e.into()),
    }
}
