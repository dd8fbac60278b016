//! The `berth` binary: `serve`, `keys add`, the git hook, and operator commands on the host.

use std::path::PathBuf;
use std::process::ExitCode;

use berth::config::Config;
use berth::server::{Berth, Identity};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "git push deployment server",
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Run the server (SSH on `ssh_listen`).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the data plane alone (the HTTP router, the apps' ports, /metrics); `serve` starts
    /// one when none runs.
    Dataplane {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Stop everything: the control plane (it finishes what is under way first, up to
    /// `shutdown_timeout`), then the data plane (apps stop being served).
    Stop {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manage the keys allowed to push and run commands.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Write one archive with the DB (a consistent snapshot, berth may run), every repo, the
    /// host key, certificates and the config: `berth backup FILE`.
    Backup {
        file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Bring a backup back on a fresh install (berth stopped): `berth restore FILE`.
    Restore {
        file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Internal: run by git inside a push.
    #[command(hide = true)]
    Hook { name: String },
    /// Internal: time rendering every target in-process (bench/render.sh).
    #[command(hide = true)]
    BenchRender {
        #[arg(long, default_value_t = 200)]
        iterations: usize,
    },
    /// Internal: render templates that are not berth's own, under limits (deploy::sandbox).
    #[command(hide = true)]
    RenderSandbox,
    /// An operator command, as over SSH: `berth apps:list --config FILE`.
    #[command(external_subcommand)]
    Other(Vec<String>),
}

#[derive(Subcommand)]
enum KeysAction {
    /// Register a public key: `berth keys add NAME --role admin --key-file PATH`.
    Add {
        name: String,
        #[arg(long, default_value = "member")]
        role: String,
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Top::Hook { name } = &cli.command {
        if name != "pre-receive" {
            eprintln!("unknown hook {name}");
            return ExitCode::from(1);
        }
        return ExitCode::from(u8::try_from(berth::push::run_pre_receive_hook()).unwrap_or(1));
    }
    if let Top::RenderSandbox = &cli.command {
        return ExitCode::from(u8::try_from(berth::deploy::sandbox::child_main()).unwrap_or(2));
    }
    if let Top::BenchRender { iterations } = &cli.command {
        berth::deploy::render::bench(*iterations);
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| "info,russh=warn,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("berth: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("berth: {message}");
            ExitCode::from(1)
        }
    }
}

/// Raises the soft limit on open files to the hard one (the background mode of install.sh and
/// hand-started servers get the shell's 1024 otherwise; systemd's unit sets LimitNOFILE).
fn raise_file_limit() {
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max.min(1 << 20);
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// `--config` given, else `/etc/berth/berth.toml` when it exists, else defaults and environment.
fn load_config(path: Option<PathBuf>) -> Result<Config, String> {
    Config::load(config_path(path).as_deref())
}

/// The config file in use: `--config`, else `/etc/berth/berth.toml` when it exists.
fn config_path(path: Option<PathBuf>) -> Option<PathBuf> {
    let default = PathBuf::from("/etc/berth/berth.toml");
    path.or_else(|| default.exists().then_some(default))
}

async fn run(command: Top) -> Result<u8, String> {
    match command {
        Top::Serve { config } => {
            raise_file_limit();
            let file = config_path(config);
            let config = Config::load(file.as_deref())?;
            let listener = tokio::net::TcpListener::bind(config.ssh_listen)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", config.ssh_listen))?;
            let berth = Berth::open(config).await?;
            // One control plane per data dir; the lock goes with the process, however it ends.
            let _lock = berth::dataplane::control_lock(&berth.config)?;
            tracing::info!(listen = %berth.config.ssh_listen, data_dir = %berth.config.data_dir.display(), "berth serving");
            berth::serve::run(berth, listener, file.as_deref()).await?;
            Ok(0)
        }
        Top::Stop { config } => {
            let config = load_config(config)?;
            println!("{}", berth::dataplane::stop_all(&config).await?);
            Ok(0)
        }
        Top::Dataplane { config } => {
            raise_file_limit();
            let file = config_path(config);
            let config = Config::load(file.as_deref())?;
            berth::dataplane::run(config, file).await?;
            Ok(0)
        }
        Top::Keys {
            action:
                KeysAction::Add {
                    name,
                    role,
                    key_file,
                    config,
                },
        } => {
            let berth = Berth::open(load_config(config)?).await?;
            let line = std::fs::read_to_string(&key_file)
                .map_err(|e| format!("cannot read {}: {e}", key_file.display()))?;
            let outcome = berth::commands::add_key(&berth, &name, &role, &line, "host").await?;
            println!("{outcome}");
            Ok(0)
        }
        Top::Backup { file, config } => {
            let path = config_path(config);
            let config = Config::load(path.as_deref())?;
            println!(
                "{}",
                berth::backup::backup(&config, path.as_deref(), &file).await?
            );
            Ok(0)
        }
        Top::Restore { file, config } => {
            let config = load_config(config)?;
            println!("{}", berth::backup::restore(&config, &file).await?);
            Ok(0)
        }
        Top::Hook { .. } | Top::BenchRender { .. } | Top::RenderSandbox => Ok(1),
        Top::Other(mut args) => {
            let mut config = None;
            if let Some(index) = args.iter().position(|a| a == "--config") {
                if index + 1 >= args.len() {
                    return Err("--config needs a file".into());
                }
                config = Some(PathBuf::from(args.remove(index + 1)));
                args.remove(index);
            }
            let berth = Berth::open(load_config(config)?).await?;
            // On the host, whoever can read the config and DB is the admin.
            let who = Identity {
                key_name: "host".into(),
                role: berth::domain::Role::Admin,
            };
            use std::io::{Read, Write};
            if let Some(stream) = berth::commands::stream(&berth, &who, &args).await {
                use futures_util::StreamExt;
                let mut stream = stream?;
                while let Some(chunk) = stream.next().await {
                    let mut stdout = std::io::stdout();
                    if stdout
                        .write_all(&chunk)
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        break;
                    }
                }
                return Ok(0);
            }
            let mut stdin = Vec::new();
            if berth::commands::reads_stdin(&args) {
                let _ = std::io::stdin().take(64 * 1024).read_to_end(&mut stdin);
            }
            let result = berth::commands::run(&berth, &who, &args, &stdin).await;
            let _ = std::io::stdout().write_all(&result.stdout);
            let _ = std::io::stderr().write_all(&result.stderr);
            Ok(u8::try_from(result.code).unwrap_or(1))
        }
    }
}
