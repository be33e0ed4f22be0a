//! `litellm-emulator`: serves the LiteLLM admin-API emulator on 127.0.0.1 until Ctrl-C, for tests and local
//! experiments (not production). The master key comes from `LITELLM_MASTER_KEY`, like the real proxy's.

use std::process::ExitCode;

use clap::Parser;
use litellm_emulator::{DEFAULT_MASTER_KEY, Emulator, EmulatorConfig, Generation};
use tracing::error;

/// Serve an emulator of LiteLLM's admin API on 127.0.0.1, for tests and local experiments (not production).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 4000)]
    port: u16,
    /// Which LiteLLM to behave like: newer (1.108.7) or older (1.80.5).
    #[arg(long, value_enum, default_value = "newer")]
    generation: GenerationArg,
    /// Seed for probabilistic faults and generated ids.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum GenerationArg {
    Newer,
    Older,
}

impl GenerationArg {
    fn name(self) -> &'static str {
        match self {
            GenerationArg::Newer => "newer",
            GenerationArg::Older => "older",
        }
    }

    fn generation(self) -> Generation {
        match self {
            GenerationArg::Newer => Generation::Newer,
            GenerationArg::Older => Generation::Older,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("cannot start the emulator: {0}")]
    Start(std::io::Error),
}

async fn run(args: Args) -> Result<(), MainError> {
    let generation = args.generation.generation();
    let mut config = EmulatorConfig::new(generation);
    config.port = args.port;
    config.seed = args.seed;
    let from_env = std::env::var("LITELLM_MASTER_KEY").ok().map(|key| key.trim().to_owned()).filter(|k| !k.is_empty());
    if let Some(key) = &from_env {
        config.master_key = key.clone();
    }
    let emulator = Emulator::start(config).await.map_err(MainError::Start)?;
    println!("LiteLLM emulator ({}, like {}) on {}", args.generation.name(), generation.version(), emulator.url());
    match from_env {
        // The default key is a well-known test value, so printing it reveals nothing.
        None => println!("master key: {DEFAULT_MASTER_KEY} (set LITELLM_MASTER_KEY to choose another)"),
        Some(_) => println!("master key: the value of LITELLM_MASTER_KEY"),
    }
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{err}");
            eprintln!("litellm-emulator: {err}");
            ExitCode::FAILURE
        }
    }
}
