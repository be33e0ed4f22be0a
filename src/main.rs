use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use litellm_operator::{
    crd::DeletionPolicy,
    duration, export,
    litellm::{ClientConfig, LiteLlmClient, MasterKey},
    operator,
    reconcile::Settings,
};
use tracing::error;
use url::Url;

/// Kubernetes operator for LiteLLM proxy users and their API keys.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller.
    Run(Box<RunArgs>),
    /// Print the operator's CustomResourceDefinitions as YAML: all of them, or the one whose file is named
    /// (`litellmuser.yaml`, `litellmproxy.yaml`).
    Crd { file: Option<String> },
    /// Print LiteLLMUser manifests (YAML) for the users a proxy already has, to bring an existing proxy under
    /// the operator: each adopts its user without changing it and keeps the user's existing keys. Review the
    /// output, then `kubectl apply` it or commit it. What the manifests cannot say is listed on stderr.
    Export(Box<ExportArgs>),
}

/// How to reach a proxy, for every command that talks to one.
#[derive(clap::Args, Debug)]
struct Connection {
    /// File holding the proxy's master key. Without it, the key is read from the LITELLM_MASTER_KEY
    /// environment variable (never from a flag, so it does not show in process listings).
    #[arg(long, env = "LITELLM_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// PEM file with CA certificates to trust when the proxy URL is HTTPS.
    #[arg(long, env = "LITELLM_CA_FILE")]
    litellm_ca_file: Option<PathBuf>,
    /// Timeout of one request to the proxy, for example 10s.
    #[arg(long, env = "LITELLM_TIMEOUT", default_value = "10s", value_parser = duration::parse_flag)]
    litellm_timeout: Duration,
    /// How long an idle connection to the proxy is kept for the next request; keep it below the proxy's own
    /// keep-alive timeout (uvicorn's default is 5s), or requests meet connections the proxy is closing.
    #[arg(long, env = "LITELLM_IDLE_TIMEOUT", default_value = "3s", value_parser = duration::parse_flag)]
    litellm_idle_timeout: Duration,
}

#[derive(clap::Args, Debug)]
struct ExportArgs {
    /// Base URL of the LiteLLM proxy to export from, for example http://litellm.litellm.svc:4000.
    #[arg(long, env = "LITELLM_URL")]
    litellm_url: Url,
    #[command(flatten)]
    connection: Connection,
    /// Namespace of the LiteLLMUser resources. By default the platform's policy lets it adopt only ids starting
    /// with `<namespace>.`; others need `userIds.scope: Any` and the namespace in `userIds.adoptionNamespaces`.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// `spec.proxyRef.name` of every resource: the LiteLLMProxy this proxy is known as. Without it, the
    /// resources use the default proxy.
    #[arg(long)]
    proxy_ref: Option<String>,
    /// `spec.deletionPolicy` of every resource. Default `Retain`: in a migration, deleting a resource by
    /// mistake (or pruning a directory in Git) must not delete a user and the keys people use.
    #[arg(long, default_value = "Retain", value_parser = parse_deletion_policy)]
    deletion_policy: DeletionPolicy,
    /// Export only this user id; repeatable. With neither this nor --user-id-prefix, every user.
    #[arg(long = "user-id")]
    user_ids: Vec<String>,
    /// Export only user ids starting with this; repeatable.
    #[arg(long = "user-id-prefix")]
    user_id_prefixes: Vec<String>,
    /// Also export users the operator already manages (marked in their LiteLLM metadata).
    #[arg(long)]
    include_managed: bool,
}

fn parse_deletion_policy(text: &str) -> Result<DeletionPolicy, String> {
    match text {
        "Retain" => Ok(DeletionPolicy::Retain),
        "Delete" => Ok(DeletionPolicy::Delete),
        _ => Err(format!("'{text}' is not a deletion policy; use Retain or Delete")),
    }
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Base URL of a LiteLLM proxy, for example http://litellm.litellm.svc:4000: the default proxy, known as
    /// `default`, unless a LiteLLMProxy is marked default. Without it, only LiteLLMProxy resources are served.
    #[arg(long, env = "LITELLM_URL")]
    litellm_url: Option<Url>,
    #[command(flatten)]
    connection: Connection,
    /// Namespaces to watch, comma-separated; all namespaces when empty or unset.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// YAML file with the policy for the proxy these flags name (the fields of a LiteLLMProxy's
    /// `spec.policy`); without it, the secure default policy applies.
    #[arg(long, env = "POLICY_FILE")]
    policy_file: Option<PathBuf>,
    /// Label selector for the LiteLLMProxy resources this operator serves, for example `tier=prod`; all when
    /// unset. Lets several operator installations split the proxies between them.
    #[arg(long, env = "PROXY_SELECTOR")]
    proxy_selector: Option<String>,
    /// Namespace for the claims on LiteLLM user ids (Leases that decide which resource manages a user id);
    /// defaults to the operator's own namespace (POD_NAMESPACE). Every operator sharing a proxy must use the
    /// same one.
    #[arg(long, env = "CLAIM_NAMESPACE")]
    claim_namespace: Option<String>,
    /// How often each resource is re-read from the proxy to refresh spend and repair drift, for example 5m.
    #[arg(long, env = "RESYNC_INTERVAL", default_value = "5m", value_parser = duration::parse_flag)]
    resync_interval: Duration,
    /// How often usage is read from LiteLLM's daily activity (one call per user), for example 1h.
    #[arg(long, env = "USAGE_REFRESH_INTERVAL", default_value = "1h", value_parser = duration::parse_flag)]
    usage_refresh_interval: Duration,
    /// Days of usage summarised in status.
    #[arg(long, env = "USAGE_WINDOW_DAYS", default_value_t = 7)]
    usage_window_days: i64,
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Per-user metric series (spend and budget, labelled by namespace and name): two series per LiteLLMUser,
    /// which the per-user dashboard panels and budget alerts need. `false` keeps the operator's series
    /// independent of the number of users.
    #[arg(long, env = "USER_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    user_metrics: bool,
    /// How many resources are reconciled at the same time.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "LISTEN_ADDRESS", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Reconcile only while holding a Lease, so that several replicas can run with one active.
    #[arg(long, env = "LEADER_ELECTION")]
    leader_election: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "LEASE_NAME", default_value = "litellm-operator")]
    lease_name: String,
    /// Namespace of the Lease; in a pod, set POD_NAMESPACE from the downward API.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// How long a leader's Lease lasts without renewal; a standby takes over about this long after the leader
    /// dies.
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = duration::parse_flag)]
    lease_duration: Duration,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("no master key: set LITELLM_MASTER_KEY or --master-key-file")]
    NoMasterKey,
    #[error("cannot read master key file {path}: {source}")]
    MasterKeyFile { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Client(#[from] litellm_operator::litellm::ClientBuildError),
    #[error(transparent)]
    Start(#[from] operator::StartError),
    #[error("cannot render the CRD: {0}")]
    Yaml(String),
    #[error("cannot read CA file {path}: {source}")]
    CaFile { path: PathBuf, source: std::io::Error },
    #[error("cannot read the policy file {path}: {reason}")]
    PolicyFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Export(#[from] export::ExportError),
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_runtime::controller=warn"));
    // Colours only for a person at a terminal: log collectors would store the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    litellm_operator::panics::install_hook();
}

fn master_key(args: &Connection) -> Result<MasterKey, MainError> {
    let key = match &args.master_key_file {
        Some(path) => MasterKey::new(
            std::fs::read_to_string(path).map_err(|source| MainError::MasterKeyFile { path: path.clone(), source })?,
        ),
        None => MasterKey::new(std::env::var("LITELLM_MASTER_KEY").unwrap_or_default()),
    };
    if key.is_empty() { Err(MainError::NoMasterKey) } else { Ok(key) }
}

fn policy(args: &RunArgs) -> Result<litellm_operator::crd::ProxyPolicy, MainError> {
    let Some(path) = &args.policy_file else { return Ok(Default::default()) };
    let failed = |reason: String| MainError::PolicyFile { path: path.clone(), reason };
    let text = std::fs::read_to_string(path).map_err(|err| failed(err.to_string()))?;
    serde_saphyr::from_str(&text).map_err(|err| failed(err.to_string()))
}

async fn run(args: RunArgs) -> Result<(), MainError> {
    // The proxy the flags name, if any; others come as LiteLLMProxy resources.
    let litellm = match &args.litellm_url {
        Some(url) => Some(client(url, &args.connection)?),
        None => None,
    };
    let settings = Settings {
        resync: args.resync_interval,
        usage_refresh: args.usage_refresh_interval,
        usage_window_days: args.usage_window_days,
        ..Settings::default()
    };
    let policy = policy(&args)?;
    let leader_election = args.leader_election.then(|| operator::LeaderElection {
        lease_name: args.lease_name.clone(),
        lease_namespace: args.lease_namespace.clone(),
        identity: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("litellm-operator-{}", std::process::id())),
        lease_duration: args.lease_duration,
    });
    let config = operator::OperatorConfig {
        namespaces: args.namespaces,
        settings,
        listen: args.listen,
        leader_election,
        concurrency: args.concurrency,
        user_metrics: args.user_metrics,
        claim_namespace: args.claim_namespace.clone().unwrap_or_else(|| args.lease_namespace.clone()),
        policy,
        proxy_selector: args.proxy_selector.clone(),
    };
    operator::run(litellm, config).await?;
    Ok(())
}

fn client(url: &Url, connection: &Connection) -> Result<LiteLlmClient, MainError> {
    let ca_pem = match &connection.litellm_ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|source| MainError::CaFile { path: path.clone(), source })?),
        None => None,
    };
    let config = ClientConfig {
        base_url: url.clone(),
        master_key: master_key(connection)?,
        ca_pem,
        timeout: connection.litellm_timeout,
        idle_timeout: connection.litellm_idle_timeout,
    };
    Ok(LiteLlmClient::new(config)?)
}

/// Reads the proxy's users and prints their manifests on stdout; what they leave out goes to stderr, so that
/// stdout can be redirected into a file as it is.
async fn export(args: ExportArgs) -> Result<(), MainError> {
    let client = client(&args.litellm_url, &args.connection)?;
    let options = export::Options {
        namespace: args.namespace,
        proxy_ref: args.proxy_ref,
        deletion_policy: args.deletion_policy,
        user_ids: args.user_ids,
        user_id_prefixes: args.user_id_prefixes,
        include_managed: args.include_managed,
    };
    let users = export::read_users(&client).await?;
    let exported = export::export(&users, &options);
    let yaml = export::render(&exported, &args.litellm_url, &options)?;
    for user in &exported.users {
        let id = user.user.spec.user_id.as_deref().unwrap_or_default();
        for note in &user.notes {
            eprintln!("litellm-operator export: user {id}: {note}");
        }
    }
    eprintln!(
        "litellm-operator export: {} users exported, {} already managed left out",
        exported.users.len(),
        exported.managed.len()
    );
    std::io::Write::write_all(&mut std::io::stdout().lock(), yaml.as_bytes()).map_err(MainError::Output)?;
    Ok(())
}

fn crd_yaml(only: Option<&str>) -> Result<String, MainError> {
    let mut documents = Vec::new();
    for (file, crd) in litellm_operator::crd::crds() {
        if only.is_none_or(|only| only == file) {
            documents.push(litellm_operator::crd::crd_yaml(&crd).map_err(|err| MainError::Yaml(err.to_string()))?);
        }
    }
    if documents.is_empty() {
        return Err(MainError::Yaml(format!("no CRD file {}", only.unwrap_or_default())));
    }
    Ok(documents.join("---\n"))
}

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[cfg(all(feature = "jemalloc", feature = "dhat-heap"))]
compile_error!("the features dhat-heap and jemalloc each install a global allocator: build with one of them");

// With `jemalloc-profiling`, profiles are written as the run's `_RJEM_MALLOC_CONF` asks (the benchmark asks for
// one at each new peak).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Written when main returns (after a SIGTERM), to the file DHAT_OUT names.
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::builder()
        .file_name(std::env::var("DHAT_OUT").unwrap_or_else(|_| "dhat-heap.json".into()))
        .build();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd { file } => crd_yaml(file.as_deref()).map(|yaml| print!("{yaml}")),
        Command::Export(args) => export(*args).await,
        Command::Run(args) => {
            init_logging(args.log_format);
            run(*args).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{err}");
            eprintln!("litellm-operator: {err}");
            ExitCode::FAILURE
        }
    }
}
