//! Process wiring: configuration, logging, the stores, the registry core,
//! and the HTTP listener.

mod conn;

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::api::auth::Peer;
use crate::api::state::AppState;
use crate::auth::audit::Auditor;
use crate::auth::service::Auth;
use crate::cli::{AdminArgs, AdminCommand, Command, ConfigArg, GcArgs, WebArgs};
use crate::config::{Backend, Config, DbDriver, ListenMode, RunMode};
use crate::meta::MetaStore;
use crate::meta::cache::CachedMeta;
use crate::meta::sql::SqlMeta;
use crate::registry::{Limits, Registry};
use crate::storage::BlobStore;
use crate::storage::local::LocalStore;

/// Bytes of metadata the in-process cache may hold.
const META_CACHE_BUDGET: usize = 8 * 1024 * 1024;
/// How long connecting to the Ceph cluster may take at start.
#[cfg(feature = "rados")]
const RADOS_CONNECT_TIME: Duration = Duration::from_secs(60);
/// How long in-flight requests get to finish on shutdown.
const DRAIN_TIME: Duration = Duration::from_secs(10);

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Web(args) => web(args).await,
        Command::Migrate(arg) => migrate(arg).await,
        Command::Gc(args) => gc(args).await,
        Command::Admin(args) => admin(args).await,
    }
}

fn load_config(arg: &ConfigArg) -> anyhow::Result<Config> {
    Ok(Config::load(&arg.config, arg.required())?)
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let level = if config.log.level.is_empty() {
        match config.runmode {
            RunMode::Dev => "debug",
            RunMode::Prod => "info",
        }
    } else {
        config.log.level.as_str()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(level).context("log.level")?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if config.log.filepath.is_empty() {
        builder.with_writer(std::io::stderr).init();
    } else {
        let path = Path::new(&config.log.filepath);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("log.filepath: creating {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("log.filepath: opening {}", path.display()))?;
        builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .init();
    }
    Ok(())
}

/// Holds an exclusive lock on the data directory for the life of the
/// process: the local store and the metadata cache assume one writer.
fn lock_data_dir(path: &Path) -> anyhow::Result<File> {
    std::fs::create_dir_all(path)
        .with_context(|| format!("dockyard.path: creating {}", path.display()))?;
    let lock_path = path.join(".lock");
    let file =
        File::create(&lock_path).with_context(|| format!("opening {}", lock_path.display()))?;
    // SAFETY: flock on an open descriptor has no memory-safety preconditions.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "dockyard.path: {} is in use by another dockyard process",
            path.display()
        );
    }
    Ok(file)
}

/// The configured metadata backend; the in-memory cache goes in front of
/// an embedded (single-writer) database only.
async fn open_meta(config: &Config) -> anyhow::Result<Arc<dyn MetaStore>> {
    let uri = config.db_uri();
    match config.db.driver {
        DbDriver::Sqlite | DbDriver::Mysql | DbDriver::Postgres => {
            let sql = SqlMeta::open(&uri, config.db.max_connections)
                .await
                .with_context(|| format!("db.uri: opening {uri}"))?;
            Ok(if config.dockyard.cachable && sql.is_embedded() {
                Arc::new(CachedMeta::new(sql, META_CACHE_BUDGET))
            } else {
                Arc::new(sql)
            })
        }
        DbDriver::Redis => {
            let redis = crate::meta::redis::RedisMeta::open(&uri, &config.db.prefix)
                .await
                .with_context(|| format!("db.uri: opening {uri}"))?;
            Ok(Arc::new(redis))
        }
    }
}

/// The configured blob store.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn BlobStore>> {
    match config.dockyard.backend {
        Backend::Local => Ok(Arc::new(
            LocalStore::open(&config.dockyard.path).with_context(|| {
                format!("dockyard.path: opening {}", config.dockyard.path.display())
            })?,
        )),
        #[cfg(feature = "rados")]
        Backend::Rados => {
            // Connecting blocks, for up to the ceph.conf's client mount timeout.
            let rados = config.rados.clone();
            let open = tokio::task::spawn_blocking(move || {
                crate::storage::rados::RadosStore::open(&rados)
            });
            let store = tokio::time::timeout(RADOS_CONNECT_TIME, open)
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "rados.conf: no answer from the cluster in {} within {} s",
                        config.rados.conf.display(),
                        RADOS_CONNECT_TIME.as_secs()
                    )
                })??;
            Ok(Arc::new(store?))
        }
        #[cfg(not(feature = "rados"))]
        Backend::Rados => {
            bail!("dockyard.backend: \"rados\" needs a dockyard built with the rados feature")
        }
    }
}

/// The registry core on the configured stores, and the metadata store.
async fn open_registry(config: &Config) -> anyhow::Result<(Arc<dyn MetaStore>, Arc<Registry>)> {
    let store = open_store(config).await?;
    let meta = open_meta(config).await?;
    Ok((meta.clone(), registry_on(config, meta, store)))
}

fn registry_on(
    config: &Config,
    meta: Arc<dyn MetaStore>,
    store: Arc<dyn BlobStore>,
) -> Arc<Registry> {
    Registry::new(
        meta,
        store,
        Limits {
            max_manifest_size: config.dockyard.max_manifest_size,
            upload_expiry: config.dockyard.upload_expiry,
        },
    )
}

/// Everything the hub's handlers use, opened and started from `config`:
/// the registry on its stores, auth, audit, the swarm node.
pub async fn app_state(config: &Config) -> anyhow::Result<AppState> {
    let mut store = open_store(config).await?;
    let meta = open_meta(config).await?;
    // The node serves pieces from this node's own store; with the storage
    // tier, the registry reads and writes through the tier over it.
    let p2p = if config.p2p.enabled {
        let swarm = crate::p2p::hub::HubSwarm::start(config, store.clone()).await?;
        if config.p2p.tier {
            store = swarm.tier(config.p2p.replicas);
        }
        Some(Arc::new(swarm))
    } else {
        None
    };
    let registry = registry_on(config, meta.clone(), store);
    if let Some(swarm) = &p2p {
        let swarm = Arc::downgrade(swarm);
        registry.on_commit(Box::new(move |digest| {
            if let Some(s) = swarm.upgrade() {
                s.blob_committed(digest);
            }
        }));
    }
    registry.spawn_janitor();
    let audit = Auditor::spawn(meta.clone(), config.audit.retention_days);
    let auth = if config.dockyard.standalone {
        tracing::warn!(
            "STANDALONE MODE: authentication and authorization are OFF; anyone who can reach \
             this hub may pull, push and delete anything ([dockyard] standalone = true)"
        );
        None
    } else {
        Some(Arc::new(Auth::new(config, meta, audit.clone()).await?))
    };
    let state = AppState {
        p2p,
        counters: Arc::default(),
        registry,
        auth,
        audit,
        trust_proxy: config.dockyard.trustproxy,
        domains: config.domains(),
    };
    Ok(state)
}

async fn web(args: WebArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    init_logging(&config)?;
    let _lock = lock_data_dir(&config.dockyard.path)?;
    let state = app_state(&config).await?;

    crate::api::metrics::spawn_logger(state.clone(), Duration::from_secs(60));
    let tls = tls_acceptor(&config)?;
    let addr = SocketAddr::new(args.address, args.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, data = %config.dockyard.path.display(), "dockyard is serving");
    // Tests and scripts wait for this exact line.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("listening on {scheme}://{local}");

    serve(listener, crate::api::router(state), tls).await;
    Ok(())
}

/// Bound on a client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

async fn serve(listener: TcpListener, app: axum::Router, tls: Option<tokio_rustls::TlsAcceptor>) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: back off, go on.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let watcher = graceful.watcher();
                let app = app.clone();
                match &tls {
                    // Plain TCP: file-backed bodies go out with sendfile.
                    None => {
                        let io = TokioIo::new(conn::ZeroCopyStream::new(stream));
                        tokio::spawn(serve_connection(io, peer, app, watcher));
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => {
                                    serve_connection(TokioIo::new(tls), peer, app, watcher).await
                                }
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining connections");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIME) => tracing::warn!("connections still open after the drain time"),
    }
}

/// Serves HTTP/1.1 on one connection until it ends or the server drains.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // Handlers learn the peer address from this extension.
    let with_peer = tower::ServiceBuilder::new()
        .map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            req
        })
        .service(app);
    let service = TowerToHyperService::new(with_peer);
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(io, service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The TLS acceptor for `listenmode = "https"`.
fn tls_acceptor(config: &Config) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    if config.listenmode != ListenMode::Https {
        return Ok(None);
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.httpscertfile)
        .and_then(|it| it.collect())
        .with_context(|| format!("httpscertfile: reading {}", config.httpscertfile.display()))?;
    if certs.is_empty() {
        bail!(
            "httpscertfile: no certificate in {}",
            config.httpscertfile.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&config.httpskeyfile)
        .with_context(|| format!("httpskeyfile: reading {}", config.httpskeyfile.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("httpskeyfile: the key does not match httpscertfile")?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(
        tls,
    ))))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn migrate(arg: ConfigArg) -> anyhow::Result<()> {
    let config = load_config(&arg)?;
    init_logging(&config)?;
    // Opening applies every pending migration.
    open_meta(&config).await?;
    println!("metadata schema is up to date ({})", config.db_uri());
    Ok(())
}

async fn gc(args: GcArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    init_logging(&config)?;
    let _lock = lock_data_dir(&config.dockyard.path)?;
    let (_, registry) = open_registry(&config).await?;
    let r = registry
        .collect_garbage(args.grace, args.dry_run)
        .await
        .map_err(|e| anyhow::anyhow!("garbage collection failed: {e}"))?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    println!(
        "{verb} {} unreferenced blobs and {} orphaned blob files, {} bytes; expired {} upload sessions",
        r.blobs_removed, r.orphans_removed, r.bytes_freed, r.uploads_expired
    );
    Ok(())
}

async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    match args.command {
        AdminCommand::Create {
            name,
            email,
            password,
            password_stdin,
            config,
        } => {
            let config = load_config(&config)?;
            init_logging(&config)?;
            let password = match (password, password_stdin) {
                (Some(p), false) => p,
                (None, true) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\n', '\r']).to_string()
                }
                _ => bail!("give exactly one of --password and --password-stdin"),
            };
            let name = crate::auth::names::check_account_name(&name)
                .map_err(|e| anyhow::anyhow!("name: {e}"))?;
            let meta = open_meta(&config).await?;
            let audit = Auditor::spawn(meta.clone(), config.audit.retention_days);
            let auth = Auth::new(&config, meta, audit).await?;
            auth.create_admin(&name, &password, email).await?;
            println!("created system administrator {name}");
            Ok(())
        }
    }
}
