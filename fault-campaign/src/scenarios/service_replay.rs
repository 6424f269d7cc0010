//! The Kafka tools against a private broker that is killed: a topic export (a
//! [`Writer`] the fault trial of [`super::service`] drives) and a replay, whose trial is
//! here: killed mid-replay, the broker brings exit 2 within the bound; restarted, the target
//! holds a prefix of each source partition and a re-run leaves every record once, in order.
//!
//! noida-db saves its data about once a second: records it acknowledged just before the kill
//! may be gone after the restart (a broker without fsync does that too). The source topic is
//! saved before any trial; a replay's target may lose its tail, which the re-run fills.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use common::repo::Kind;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use super::kill_writer::Writer;
use super::service::{expect_error_line, inject_and_wait, Fault};
use super::service_faults::{BrokerKill, KAFKA_TIMEOUT};
use super::writers::KEEP_ONE;
use super::Scenario;
use crate::checks;
use crate::context::{Backend, Ctx, Repo};
use crate::process::{self, Running};
use crate::topic::{self, Contents};

/// Partitions and records per partition of the source topic: far more than a replay
/// producer's local queue holds (10,000 records with three producers), so a dead broker
/// fills it, and enough that a run outlasts the broker's one-second saves.
const PARTITIONS: i32 = 3;
const PER_PARTITION: u64 = 100_000;

/// A topic on the private broker and what it holds.
pub struct PrivateTopic {
    pub bootstrap: String,
    pub name: String,
    pub contents: Contents,
}

impl PrivateTopic {
    /// A fresh topic with numbered records, saved by the broker before it returns.
    fn new(broker: &test_support::broker::PrivateBroker) -> anyhow::Result<PrivateTopic> {
        let bootstrap = broker.bootstrap();
        let name = test_support::unique_name("fc_private");
        let since = SystemTime::now();
        create_topic(&bootstrap, &name, PARTITIONS)?;
        produce_numbered(&bootstrap, &name)?;
        let contents = topic::read_from(&bootstrap, &name)?;
        anyhow::ensure!(
            topic::count(&contents) == (PARTITIONS as u64 * PER_PARTITION) as usize,
            "the private topic {name} holds {} records",
            topic::count(&contents)
        );
        broker.wait_saved(since);
        Ok(PrivateTopic {
            bootstrap,
            name,
            contents,
        })
    }

    /// kafka-replay of set `id` (or the newest) of `repo` into `target`, bounded by
    /// [`KAFKA_TIMEOUT`].
    fn replay(&self, ctx: &Ctx, repo: &Repo, id: Option<&str>, target: &str) -> Command {
        let mut cmd = ctx.tool("kafka-replay");
        repo.apply(&mut cmd)
            .args([
                "--bootstrap-servers",
                &self.bootstrap,
                "--backup-dir",
                &repo.url,
            ])
            .args(["--topic", &self.name, "--target-topic", target])
            .args(["--output", "json", "--timeout", KAFKA_TIMEOUT]);
        if let Some(id) = id {
            cmd.args(["--backup-id", id]);
        }
        cmd
    }
}

fn admin(bootstrap: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("cannot create an admin client for the private broker")
}

/// Creates a topic that never expires records (noida-db expires old ones quickly otherwise).
fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin = admin(bootstrap)?;
    let topic =
        NewTopic::new(name, partitions, TopicReplication::Fixed(1)).set("retention.ms", "-1");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = test_support::kafka::block_on(admin.create_topics(&[topic], &options))
        .context("CreateTopics on the private broker")?;
    for result in results {
        result.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
    }
    Ok(())
}

/// Deletes a scratch topic (best effort), so the broker's data, loaded again at each
/// restart, does not grow from trial to trial.
fn delete_topic(bootstrap: &str, name: &str) {
    let Ok(admin) = admin(bootstrap) else { return };
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let _ = test_support::kafka::block_on(admin.delete_topics(&[name], &options));
}

/// Records key `k<n>`, value `v<partition>-<n>` in every partition, all delivered.
fn produce_numbered(bootstrap: &str, name: &str) -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .context("cannot create a producer for the private broker")?;
    for n in 0..PER_PARTITION {
        for p in 0..PARTITIONS {
            let value = format!("v{p}-{n}");
            let key = format!("k{n}");
            let record = BaseRecord::to(name)
                .partition(p)
                .key(key.as_str())
                .payload(value.as_str());
            test_support::kafka::send(&producer, record);
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .context("cannot deliver the source records to the private broker")
}

/// kafka-topic-backup of a topic on the private broker.
pub struct BrokerExport {
    source: PrivateTopic,
}

impl BrokerExport {
    pub fn new(fault: &BrokerKill) -> anyhow::Result<BrokerExport> {
        Ok(BrokerExport {
            source: PrivateTopic::new(&fault.broker)?,
        })
    }
}

impl Writer for BrokerExport {
    fn kind(&self) -> Kind {
        Kind::Kafka
    }

    fn name(&self) -> &'static str {
        "kafka-private"
    }

    fn command(&self, ctx: &Ctx, repo: &Repo) -> Command {
        let mut cmd = ctx.tool("kafka-topic-backup");
        repo.apply(&mut cmd)
            .args(["--bootstrap-servers", &self.source.bootstrap])
            .args(["--backup-dir", &repo.url, "--topic", &self.source.name])
            .args(["--output", "json", "--timeout", KAFKA_TIMEOUT])
            .args(KEEP_ONE);
        cmd
    }

    fn check_set(&self, ctx: &Ctx, repo: &Repo, id: &str) -> anyhow::Result<String> {
        let target = test_support::unique_name("fc_check");
        let result = (|| -> anyhow::Result<()> {
            let mut cmd = self.source.replay(ctx, repo, Some(id), &target);
            process::run_ok(&mut cmd, "kafka-replay")?;
            let got = topic::read_from(&self.source.bootstrap, &target)?;
            topic::expect_same(&got, &self.source.contents, "the replayed set")
        })();
        delete_topic(&self.source.bootstrap, &target);
        result?;
        Ok("replayed with kafka-replay, every record once".into())
    }
}

/// kafka-replay into the private broker, which is killed mid-replay. The set comes from the
/// broker's own source topic; each trial replays into a new target topic.
pub struct BrokerReplay {
    fault: BrokerKill,
    source: PrivateTopic,
    repo: Repo,
    /// How long an undisturbed replay takes: the kill moment is drawn over it.
    length: Duration,
}

impl BrokerReplay {
    pub fn new(ctx: &Ctx) -> anyhow::Result<BrokerReplay> {
        let fault = BrokerKill::start()?;
        let source = PrivateTopic::new(&fault.broker)?;
        let repo = ctx.fresh_repo(Backend::Local, "kafka-private-set")?;
        let mut cmd = ctx.tool("kafka-topic-backup");
        cmd.args(["--bootstrap-servers", &source.bootstrap]).args([
            "--backup-dir",
            &repo.url,
            "--topic",
            &source.name,
        ]);
        process::run_ok(&mut cmd, "kafka-topic-backup")?;
        let mut scenario = BrokerReplay {
            fault,
            source,
            repo,
            length: Duration::ZERO,
        };
        let target = test_support::unique_name("fc_calibrate");
        let ended = process::run_ok(
            &mut scenario.source.replay(ctx, &scenario.repo, None, &target),
            "the calibration replay",
        )?;
        scenario.expect_exact(&target, "the calibration replay")?;
        delete_topic(&scenario.source.bootstrap, &target);
        scenario.length = ended.elapsed;
        Ok(scenario)
    }

    fn expect_exact(&self, target: &str, what: &str) -> anyhow::Result<()> {
        let got = topic::read_from(&self.source.bootstrap, target)?;
        topic::expect_same(&got, &self.source.contents, what)
    }

    /// After the kill and the restart, the target holds a prefix of each source partition
    /// (or does not exist: created less than a save before the kill).
    fn expect_prefix(&self, target: &str) -> anyhow::Result<String> {
        let got = match topic::read_from(&self.source.bootstrap, target) {
            Ok(got) => got,
            Err(e) if e.to_string().contains("does not exist") => {
                return Ok("the target is gone after the restart".into())
            }
            Err(e) => return Err(e),
        };
        topic::expect_prefix(&got, &self.source.contents)?;
        Ok(format!(
            "{} of {} records in the target after the restart",
            topic::count(&got),
            topic::count(&self.source.contents)
        ))
    }

    /// The replay meets the kill at `at` (unless it ended first) and must end as it should;
    /// returns what happened.
    fn faulty_replay(&mut self, ctx: &Ctx, at: Duration, target: &str) -> anyhow::Result<String> {
        let mut running = Running::spawn(
            &mut self.source.replay(ctx, &self.repo, None, target),
            "the replay",
        )?;
        let started = Instant::now();
        std::thread::sleep(at.saturating_sub(started.elapsed()));
        if !running.is_running() {
            let ended = running.wait(process::RUN_LIMIT)?;
            ended.ok("the replay meant to meet the kill (it ended first)")?;
            return Ok(format!(
                "the replay ended before the kill at {:.2}s",
                at.as_secs_f64()
            ));
        }
        let (what, injected_at, ended) = inject_and_wait(&mut self.fault, running, started)?;
        let note = format!(
            "{what} at {:.2}s of a {:.2}s replay; exit {} {:.1}s later",
            injected_at.as_secs_f64(),
            self.length.as_secs_f64(),
            ended.run.code,
            ended.elapsed.saturating_sub(injected_at).as_secs_f64()
        );
        if ended.run.code == 0 {
            return Ok(note);
        }
        let line = expect_error_line(&ended.run, "kafka-replay", self.fault.causes())
            .with_context(|| note.clone())?;
        Ok(format!("{note}: \"{line}\""))
    }

    /// A replay killed at a seeded moment, the broker back, then the re-run.
    fn killed_trial(
        &mut self,
        ctx: &Ctx,
        rng: &mut fastrand::Rng,
        target: &str,
    ) -> anyhow::Result<String> {
        let at = checks::kill_moment(rng, self.length);
        let mut note = self.faulty_replay(ctx, at, target)?;
        self.fault.recover()?;
        note.push_str(&format!("; {}", self.expect_prefix(target)?));
        let rerun = process::run(
            &mut self.source.replay(ctx, &self.repo, None, target),
            "the re-run",
        )?;
        rerun.ok("the re-run").with_context(|| note.clone())?;
        self.expect_exact(target, "the re-run")
            .with_context(|| note.clone())?;
        Ok(format!("{note}; re-run: every record once, in order"))
    }
}

impl Scenario for BrokerReplay {
    fn trial(&mut self, ctx: &Ctx, rng: &mut fastrand::Rng) -> anyhow::Result<String> {
        self.fault.recover()?;
        let target = test_support::unique_name("fc_replay");
        let result = self.killed_trial(ctx, rng, &target);
        // Whatever happened, the broker runs again for the next trial.
        let recovered = self.fault.recover();
        delete_topic(&self.source.bootstrap, &target);
        let note = result?;
        recovered?;
        Ok(note)
    }
}
