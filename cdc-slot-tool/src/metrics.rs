//! The slot metrics for node_exporter's textfile collector, in the exposition format of
//! `common::metrics`, which also replaces the file atomically.

use std::path::Path;

use common::metrics;

use crate::server::Identity;
use crate::status::SlotHealth;

/// Every metric name starts with this.
pub const PREFIX: &str = "cdc_slot";

/// The `wal_status` values PostgreSQL reports, one series each.
const WAL_STATUSES: [&str; 4] = ["reserved", "extended", "unreserved", "lost"];

/// One metric family: HELP, TYPE and its samples.
#[derive(Debug)]
struct Family {
    name: String,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn gauge(name: &str, help: &'static str) -> Family {
        Family {
            name: format!("{PREFIX}_{name}"),
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push((labels, value));
    }
}

fn render(families: &[Family]) -> String {
    let mut text = String::new();
    for family in families {
        let samples: Vec<(String, f64)> = family
            .samples
            .iter()
            .map(|(labels, value)| (metrics::labels(labels), *value))
            .collect();
        metrics::write_gauge(&mut text, &family.name, family.help, &samples);
    }
    text
}

fn run_families(up: bool, now: f64) -> Vec<Family> {
    let mut up_family = Family::gauge("up", "1 when the last status run could read the server.");
    up_family.add(Vec::new(), if up { 1.0 } else { 0.0 });
    let mut last = Family::gauge(
        "last_run_timestamp_seconds",
        "Unix time of the last status run.",
    );
    last.add(Vec::new(), now);
    vec![up_family, last]
}

/// The metrics of a successful status run.
pub fn render_status(slots: &[SlotHealth], identity: &Identity, now: f64) -> String {
    let mut families = run_families(true, now);
    let mut server = Family::gauge(
        "server_wal_lsn_bytes",
        "Current WAL position of the server, as a byte offset.",
    );
    server.add(Vec::new(), identity.current_lsn.0 as f64);
    let mut timeline = Family::gauge("server_timeline", "Timeline the server is on.");
    timeline.add(Vec::new(), f64::from(identity.timeline));
    let mut count = Family::gauge("slots", "Number of replication slots.");
    count.add(Vec::new(), slots.len() as f64);
    let mut info = Family::gauge("info", "Slot definition (always 1).");
    let mut active = Family::gauge("active", "1 when a consumer is connected.");
    let mut lag = Family::gauge(
        "lag_bytes",
        "WAL bytes the consumer has not confirmed (confirmed_flush_lsn, physical: restart_lsn).",
    );
    let mut retained = Family::gauge(
        "retained_wal_bytes",
        "WAL bytes the slot holds back (from restart_lsn).",
    );
    let mut safe = Family::gauge(
        "safe_wal_size_bytes",
        "WAL bytes that can still be written before the slot is lost (only with max_slot_wal_keep_size).",
    );
    let mut wal_status = Family::gauge("wal_status", "1 for the slot's current wal_status.");
    let mut inactive = Family::gauge(
        "inactive_seconds",
        "Seconds since the slot was last seen in use (0 when active; absent when unknown).",
    );
    let mut healthy = Family::gauge(
        "healthy",
        "1 when the slot passes every status check, 0 when it needs attention.",
    );
    for health in slots {
        let slot = &health.slot;
        let base = || {
            vec![
                ("slot", slot.slot_name.clone()),
                ("database", slot.database.clone().unwrap_or_default()),
            ]
        };
        let mut labels = base();
        labels.push(("slot_type", slot.slot_type.clone()));
        labels.push(("plugin", slot.plugin.clone().unwrap_or_default()));
        labels.push(("temporary", slot.temporary.to_string()));
        info.add(labels, 1.0);
        active.add(base(), if slot.active { 1.0 } else { 0.0 });
        if let Some(bytes) = slot.lag_bytes {
            lag.add(base(), bytes as f64);
        }
        if let Some(bytes) = slot.retained_wal_bytes {
            retained.add(base(), bytes as f64);
        }
        if let Some(bytes) = slot.safe_wal_size {
            safe.add(base(), bytes as f64);
        }
        if let Some(status) = &slot.wal_status {
            for value in WAL_STATUSES {
                let mut labels = base();
                labels.push(("wal_status", value.to_string()));
                wal_status.add(labels, if status == value { 1.0 } else { 0.0 });
            }
        }
        if let Some(seconds) = health.inactive_seconds {
            inactive.add(base(), seconds as f64);
        }
        healthy.add(base(), if health.healthy { 1.0 } else { 0.0 });
    }
    families.extend([
        server, timeline, count, info, active, lag, retained, safe, wal_status, inactive, healthy,
    ]);
    render(&families)
}

/// The metrics of a run that could not read the server: `cdc_slot_up 0`.
pub fn render_down(now: f64) -> String {
    render(&run_families(false, now))
}

/// Replaces the metrics file atomically (mode 0644: the collector usually runs as another
/// user, and metrics hold nothing secret).
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    metrics::write_file(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_metrics_say_so() {
        let text = render_down(1700000000.0);
        assert!(text.contains("\ncdc_slot_up 0\n"), "{text}");
        assert!(text.ends_with('\n'));
    }
}
