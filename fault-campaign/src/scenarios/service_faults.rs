//! The services that fail under a run, each with the bound the tools must end within and the
//! words their error line must name: the campaign's source cluster restarted by `pg_ctl`, a
//! private broker and a private S3 server killed with SIGKILL and started again, and the
//! shared S3 server reached through a proxy that stops answering.

use std::process::Command;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context as _;
use test_support::broker::PrivateBroker;
use test_support::os_user::as_db_user;
use test_support::pg::{pg_bin, PgOptions};

use super::service::Fault;
use super::sources::Cluster;
use crate::context::{Backend, Ctx, Repo, S3_LOCK_TTL_S};
use crate::s3_server::S3Server;
use test_support::stall::StallProxy;

/// What a PostgreSQL client says when its server went away or is not back yet.
const PG_CAUSES: &[&str] = &[
    "server closed the connection",
    "terminating connection",
    "connection closed",
    "closed the connection",
    "connection reset",
    "connection refused",
    "could not connect",
    "connection to server",
    "shutting down",
    "starting up",
    "in recovery mode",
];

/// `pg_ctl restart -m fast|immediate` of a source cluster shared with the other scenarios
/// (its data survives either way).
pub struct PgRestart {
    source: Rc<Cluster>,
    mode: &'static str,
}

impl PgRestart {
    /// The cluster pg-base-backup's scenarios back up.
    pub fn base(ctx: &Ctx, mode: &'static str) -> anyhow::Result<PgRestart> {
        Ok(PgRestart {
            source: ctx.shared("cluster:base", || Cluster::with_app(PgOptions::default()))?,
            mode,
        })
    }

    /// The cluster pg-logical-backup's scenarios dump.
    pub fn logical(ctx: &Ctx, mode: &'static str) -> anyhow::Result<PgRestart> {
        Ok(PgRestart {
            source: ctx.shared(
                "cluster:logical",
                || Cluster::with_app(PgOptions::default()),
            )?,
            mode,
        })
    }
}

impl Fault for PgRestart {
    fn fresh_repo(&mut self, ctx: &Ctx, name: &str) -> anyhow::Result<Repo> {
        ctx.fresh_repo(Backend::Local, name)
    }

    /// Returns once the server accepts connections again (`-w`).
    fn inject(&mut self) -> anyhow::Result<String> {
        let pg = &self.source.pg;
        let mut cmd = Command::new(pg_bin("pg_ctl"));
        cmd.arg("-D")
            .arg(&pg.data_dir)
            .arg("-l")
            .arg(pg.log_file())
            .args(["-m", self.mode, "-w", "-t", "60", "restart"]);
        let out = as_db_user(&mut cmd)
            .output()
            .context("cannot run pg_ctl restart")?;
        anyhow::ensure!(
            out.status.success(),
            "pg_ctl restart -m {} failed: {}",
            self.mode,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(format!("pg_ctl restart -m {}", self.mode))
    }

    fn recover(&mut self) -> anyhow::Result<()> {
        crate::sql::query(&self.source.pg, "postgres", "SELECT 1")
            .map(drop)
            .context("the source cluster does not answer after its restart")
    }

    /// The tool sees the connection drop at once; a connect during the restart fails at once.
    fn bound(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn causes(&self) -> &'static [&'static str] {
        PG_CAUSES
    }
}

/// What a Kafka tool says when its broker is gone.
const BROKER_CAUSES: &[&str] = &["broker", "kafka", "transport", "delivered"];

/// The `--timeout` the Kafka tools get in the broker scenarios, which their bound follows.
pub const KAFKA_TIMEOUT: &str = "10s";

/// A private noida-db broker killed with SIGKILL and started again on the same port and data;
/// stopped when the scenario ends.
pub struct BrokerKill {
    pub broker: PrivateBroker,
}

impl BrokerKill {
    pub fn start() -> anyhow::Result<BrokerKill> {
        Ok(BrokerKill {
            broker: PrivateBroker::start(),
        })
    }
}

impl Fault for BrokerKill {
    fn fresh_repo(&mut self, ctx: &Ctx, name: &str) -> anyhow::Result<Repo> {
        ctx.fresh_repo(Backend::Local, name)
    }

    fn inject(&mut self) -> anyhow::Result<String> {
        self.broker.kill();
        Ok("broker killed (-9)".into())
    }

    fn recover(&mut self) -> anyhow::Result<()> {
        self.broker.restart();
        Ok(())
    }

    /// The tools' `--timeout` (no record, no delivery for that long) and their 15 s metadata
    /// requests, with room for a loaded machine.
    fn bound(&self) -> Duration {
        Duration::from_secs(45)
    }

    fn causes(&self) -> &'static [&'static str] {
        BROKER_CAUSES
    }
}

/// What a tool says when the S3 service is gone.
const S3_CAUSES: &[&str] = &["s3", "error sending request", "connect"];

/// A private S3 server killed with SIGKILL mid-upload and started again with its data.
pub struct S3Kill {
    server: S3Server,
}

impl S3Kill {
    pub fn start() -> anyhow::Result<S3Kill> {
        Ok(S3Kill {
            server: S3Server::start()?,
        })
    }
}

impl Fault for S3Kill {
    fn fresh_repo(&mut self, _ctx: &Ctx, name: &str) -> anyhow::Result<Repo> {
        let mut env = self.server.vars(&self.server.endpoint());
        env.push(("BACKUP_S3_LOCK_TTL".into(), format!("{S3_LOCK_TTL_S}s")));
        Ok(Repo::on_s3(self.server.url(&format!("fc-{name}")), env))
    }

    fn inject(&mut self) -> anyhow::Result<String> {
        self.server.kill();
        Ok("S3 server killed (-9)".into())
    }

    fn recover(&mut self) -> anyhow::Result<()> {
        self.server.restart()
    }

    /// Refused connections are retried for BACKUP_S3_RETRY_TIMEOUT (5 s here) per request,
    /// and the clean-up of the unfinished set tries a few requests more.
    fn bound(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn causes(&self) -> &'static [&'static str] {
        S3_CAUSES
    }
}

/// How long one S3 request may take in the stall scenarios (BACKUP_S3_REQUEST_TIMEOUT).
const STALL_REQUEST_TIMEOUT_S: u64 = 5;

/// What a tool says when S3 stops answering.
const STALL_CAUSES: &[&str] = &["timed out", "timeout"];

/// The shared S3 server, reached by the timed and faulty runs through a proxy that stops
/// answering at the fault; the next run goes to the server directly.
pub struct S3Stall {
    endpoint: String,
    proxy: Option<StallProxy>,
}

impl S3Stall {
    pub fn new(_ctx: &Ctx) -> anyhow::Result<S3Stall> {
        Ok(S3Stall {
            endpoint: std::env::var("PIPELINE_BACKUP_TEST_S3_ENDPOINT")
                .context("PIPELINE_BACKUP_TEST_S3_ENDPOINT is not set")?,
            proxy: None,
        })
    }
}

impl Fault for S3Stall {
    fn fresh_repo(&mut self, ctx: &Ctx, name: &str) -> anyhow::Result<Repo> {
        ctx.fresh_repo(Backend::S3, name)
    }

    fn arm(&mut self) -> anyhow::Result<()> {
        self.proxy = Some(StallProxy::to_endpoint(&self.endpoint));
        Ok(())
    }

    fn route(&self, cmd: &mut Command) {
        if let Some(proxy) = &self.proxy {
            cmd.env("AWS_ENDPOINT_URL", proxy.endpoint()).env(
                "BACKUP_S3_REQUEST_TIMEOUT",
                format!("{STALL_REQUEST_TIMEOUT_S}s"),
            );
        }
    }

    fn inject(&mut self) -> anyhow::Result<String> {
        self.proxy
            .as_ref()
            .context("the proxy was not started")?
            .stall();
        Ok("S3 stalled".into())
    }

    fn recover(&mut self) -> anyhow::Result<()> {
        self.proxy = None;
        Ok(())
    }

    /// The request under way times out, the clean-up's requests too, each within the request
    /// timeout: a handful of them.
    fn bound(&self) -> Duration {
        Duration::from_secs(STALL_REQUEST_TIMEOUT_S * 8)
    }

    fn causes(&self) -> &'static [&'static str] {
        STALL_CAUSES
    }
}
