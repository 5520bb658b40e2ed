//! The `slotproxy` binary: parse the command line, load the config, run until a signal.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use slotproxy::config::{Config, Overrides};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code for configuration errors (`EX_USAGE` from sysexits.h).
const EXIT_CONFIG: u8 = 64;
/// Exit code when the proxy cannot start (`EX_UNAVAILABLE`).
const EXIT_START: u8 = 69;

/// A transparent resharding proxy for Redis Cluster: cluster-unaware clients connect to it as
/// to one Redis server.
#[derive(Debug, Parser)]
#[command(name = "slotproxy", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// TOML config file (see config/slotproxy.toml for every option); defaults apply without it.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Client (RESP) listen address; overrides proxy.listen [default: 127.0.0.1:6380].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Admin HTTP and /metrics listen address; overrides admin.listen [default: 127.0.0.1:9180].
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Cluster seed nodes, host:port[,host:port…]; overrides cluster.seeds.
    #[arg(long, value_name = "A,B")]
    seeds: Option<String>,
    /// Only check the configuration (file, overrides, environment) and exit: 0 when valid,
    /// 64 with the file, line and field otherwise.
    #[arg(long)]
    check: bool,
    /// Without a subcommand, slotproxy runs the proxy.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Operate a running proxy through its admin API: status, check, fix, add-node,
    /// drain, del-node, reshard, rebalance, watch, jobs, pause, resume, cancel.
    Ctl(slotproxy::ctl::CtlArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Ctl(args)) = cli.command {
        return slotproxy::ctl::run(args);
    }
    let overrides = Overrides {
        listen: cli.listen,
        admin_listen: cli.admin_listen,
        seeds: cli.seeds,
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("slotproxy: config error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Certificates and keys are read now, so a bad file stops the proxy before it starts.
    if let Err(error) = slotproxy::tls::check(&config) {
        let error = config.field_error(error.field, error.message);
        eprintln!("slotproxy: config error: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if cli.check {
        println!("slotproxy: configuration is valid");
        return ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: journald, files and log shippers get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if config.log.format == slotproxy::config::LogFormat::Json {
        logs.json().init();
    } else {
        logs.init();
    }
    #[cfg(feature = "failpoints")]
    let _failpoints = slotproxy::failpoint::setup();
    // Secrets print as "<redacted>" (see config::redact).
    tracing::debug!(?config, "configuration");

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.proxy.worker_threads > 0 {
        runtime.worker_threads(config.proxy.worker_threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("slotproxy: cannot start the runtime: {error}");
            return ExitCode::from(EXIT_START);
        }
    };
    runtime.block_on(async move {
        let proxy = match slotproxy::start(config).await {
            Ok(proxy) => proxy,
            Err(error) => {
                eprintln!("slotproxy: {error}");
                return ExitCode::from(EXIT_START);
            }
        };
        let signal = wait_for_signal().await;
        tracing::info!(
            signal,
            "shutting down: no new clients, finishing in-flight replies"
        );
        if !proxy.shutdown().await {
            tracing::warn!("grace period over; closing remaining client connections");
        }
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGTERM or SIGINT and names the signal.
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, only Ctrl-C through tokio's portable API is left.
        let _ = tokio::signal::ctrl_c().await;
        return "ctrl-c";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
