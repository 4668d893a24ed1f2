//! `driftscope probe`: an HTTP GET of one of driftscope's own endpoints, exit 0 on a
//! 2xx answer. The runtime image has no shell and no curl, so Docker's and Compose's
//! health checks run the binary itself; Kubernetes probes the endpoints directly.

use anyhow::Context;
use clap::Args;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  driftscope probe                                         readiness of the monitor on this host
  driftscope probe --url http://127.0.0.1:9464/healthz     liveness

Exit 0: a 2xx answer; 1: any other answer (its status and body on stderr); 2: no answer.")]
pub struct ProbeArgs {
    /// The endpoint to GET (redirects are not followed).
    #[arg(long, default_value = "http://127.0.0.1:9464/readyz")]
    url: String,
    /// Give up after this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(args.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the HTTP client")?;
        let response =
            client.get(&args.url).send().await.with_context(|| format!("no answer from {}", args.url))?;
        let status = response.status();
        if status.is_success() {
            return Ok(ExitCode::SUCCESS);
        }
        // /readyz says why it is not ready in its body.
        let body = response.text().await.unwrap_or_default();
        eprintln!("{}: {status}: {}", args.url, body.trim());
        Ok(ExitCode::from(1))
    })
}
