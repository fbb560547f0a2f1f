//! Prometheus metrics: counters and latency histograms kept in atomics, rendered in the text
//! exposition format (version 0.0.4) for the `--metrics-listen` endpoint (off by default). Per-partition gauges (log end offset, high watermark, size; the in-sync replica
//! count and under-replicated flag of partitions this broker leads) are read at scrape time, so
//! they cost nothing between scrapes. `sluiceway_waiting_fetches` counts fetches parked in their
//! long poll now. Replication counters: replica fetches sent and failed
//! (follower), served (leader), ISR shrinks and expansions written (leader).
//!
//! A leaf of the crate: it imports nothing from it. The counters live in [`Metrics`]; what is read
//! at scrape time comes in a [`Snapshot`] the broker builds, so rendering needs no broker. The
//! HTTP endpoint that serves it is `crate::server`'s (`metrics_http.rs`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram (cumulative on render).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_SECONDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS_SECONDS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Counters for one request type.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub latency: Histogram,
}

impl RequestMetrics {
    /// Records one finished request.
    pub fn record(&self, started: Instant, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.observe(started.elapsed());
    }
}

/// Counts one fetch in `sluiceway_waiting_fetches` while it lives (one wait of one long poll;
/// an increment and a decrement per wait, nothing per message).
#[derive(Debug)]
pub struct WaitingFetch<'a>(&'a AtomicU64);

impl<'a> WaitingFetch<'a> {
    pub fn enter(gauge: &'a AtomicU64) -> WaitingFetch<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        WaitingFetch(gauge)
    }
}

impl Drop for WaitingFetch<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The broker's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub produce: RequestMetrics,
    pub fetch: RequestMetrics,
    pub list_offsets: RequestMetrics,
    pub init_producer_id: RequestMetrics,
    pub metadata: RequestMetrics,
    pub admin: RequestMetrics,
    /// Group requests except JoinGroup.
    pub group: RequestMetrics,
    /// JoinGroup, apart because it waits for the rebalance.
    pub join_group: RequestMetrics,
    pub connections_open: AtomicU64,
    /// Fetches parked in their long-poll wait now (consumers' and followers'): what a test
    /// waits on to know a fetch is waiting, instead of sleeping.
    pub waiting_fetches: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Follower side: fetches sent to leaders, failed ones, bytes appended from them.
    pub replica_fetches: AtomicU64,
    pub replica_fetch_errors: AtomicU64,
    pub replica_fetched_bytes: AtomicU64,
    /// Leader side: replica fetch reads served (a long poll may read more than once).
    pub replica_fetches_served: AtomicU64,
    /// Leader side: ISR changes written to the registry.
    pub isr_shrinks: AtomicU64,
    pub isr_expands: AtomicU64,
}

/// The gauges read at scrape time.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Consumer groups with members, and their members.
    pub groups: usize,
    pub group_members: usize,
    pub group_rebalances: u64,
    /// Bytes of the `__consumer_offsets` logs.
    pub group_offsets_size_bytes: u64,
    /// Every hosted partition, sorted by topic then partition.
    pub partitions: Vec<PartitionSnapshot>,
}

/// One hosted partition's gauges and counters.
#[derive(Debug, Default)]
pub struct PartitionSnapshot {
    pub topic: String,
    pub partition: u32,
    /// The in-sync replica count while this broker leads the partition.
    pub isr_size: Option<u32>,
    pub replica_count: u32,
    pub log_end_offset: u64,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub size_bytes: u64,
    pub produced_messages: u64,
    pub produced_bytes: u64,
    pub fetched_bytes: u64,
    pub duplicate_batches: u64,
    pub replicated_bytes: u64,
    /// Pipelined produce requests that waited for an earlier one of their producer, and that
    /// were refused (`replication::produce_order`).
    pub produce_order_waits: u64,
    pub produce_order_refusals: u64,
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every metric in the Prometheus text format.
pub fn render(m: &Metrics, snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let kinds: [(&str, &RequestMetrics); 8] = [
        ("produce", &m.produce),
        ("fetch", &m.fetch),
        ("list_offsets", &m.list_offsets),
        ("init_producer_id", &m.init_producer_id),
        ("metadata", &m.metadata),
        ("admin", &m.admin),
        ("group", &m.group),
        ("join_group", &m.join_group),
    ];
    out.push_str("# HELP sluiceway_requests_total Requests handled, by type.\n# TYPE sluiceway_requests_total counter\n");
    for (k, r) in &kinds {
        let _ = writeln!(
            out,
            "sluiceway_requests_total{{request=\"{k}\"}} {}",
            r.requests.load(Ordering::Relaxed)
        );
    }
    out.push_str(
        "# HELP sluiceway_request_errors_total Requests answered with a request-level error, by type.\n\
         # TYPE sluiceway_request_errors_total counter\n",
    );
    for (k, r) in &kinds {
        let _ = writeln!(
            out,
            "sluiceway_request_errors_total{{request=\"{k}\"}} {}",
            r.errors.load(Ordering::Relaxed)
        );
    }
    out.push_str(
        "# HELP sluiceway_request_duration_seconds Request latency, by type (fetch includes its long-poll wait).\n\
         # TYPE sluiceway_request_duration_seconds histogram\n",
    );
    for (k, r) in &kinds {
        let h = &r.latency;
        let mut cumulative = 0;
        for (i, b) in BUCKETS_SECONDS.iter().enumerate() {
            cumulative += h.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "sluiceway_request_duration_seconds_bucket{{request=\"{k}\",le=\"{b}\"}} {cumulative}"
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "sluiceway_request_duration_seconds_bucket{{request=\"{k}\",le=\"+Inf\"}} {count}"
        );
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "sluiceway_request_duration_seconds_sum{{request=\"{k}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "sluiceway_request_duration_seconds_count{{request=\"{k}\"}} {count}"
        );
    }
    let _ = write!(
        out,
        "# HELP sluiceway_connections_open Client connections open now.\n# TYPE sluiceway_connections_open gauge\n\
         sluiceway_connections_open {}\n\
         # HELP sluiceway_connections_accepted_total Client connections accepted.\n# TYPE sluiceway_connections_accepted_total counter\n\
         sluiceway_connections_accepted_total {}\n\
         # HELP sluiceway_waiting_fetches Fetches waiting in their long poll now.\n# TYPE sluiceway_waiting_fetches gauge\n\
         sluiceway_waiting_fetches {}\n",
        m.connections_open.load(Ordering::Relaxed),
        m.connections_accepted.load(Ordering::Relaxed),
        m.waiting_fetches.load(Ordering::Relaxed)
    );
    let (groups, members) = (snapshot.groups, snapshot.group_members);
    let _ = write!(
        out,
        "# HELP sluiceway_groups Consumer groups with members now.\n# TYPE sluiceway_groups gauge\n\
         sluiceway_groups {groups}\n\
         # HELP sluiceway_group_members Members of all consumer groups now.\n# TYPE sluiceway_group_members gauge\n\
         sluiceway_group_members {members}\n\
         # HELP sluiceway_group_rebalances_total Rebalances completed since the broker started.\n# TYPE sluiceway_group_rebalances_total counter\n\
         sluiceway_group_rebalances_total {}\n\
         # HELP sluiceway_group_offsets_size_bytes Bytes of the __consumer_offsets logs.\n# TYPE sluiceway_group_offsets_size_bytes gauge\n\
         sluiceway_group_offsets_size_bytes {}\n",
        snapshot.group_rebalances, snapshot.group_offsets_size_bytes
    );
    let counters: [(&str, &str, u64); 6] = [
        (
            "sluiceway_replica_fetches_total",
            "Fetches this broker sent to leaders as a follower.",
            m.replica_fetches.load(Ordering::Relaxed),
        ),
        (
            "sluiceway_replica_fetch_errors_total",
            "Follower fetches or truncation requests that failed (connection, timeout).",
            m.replica_fetch_errors.load(Ordering::Relaxed),
        ),
        (
            "sluiceway_replica_fetched_bytes_total",
            "Bytes this broker appended from leaders as a follower.",
            m.replica_fetched_bytes.load(Ordering::Relaxed),
        ),
        (
            "sluiceway_replica_fetches_served_total",
            "Replica fetch reads this broker served as a leader.",
            m.replica_fetches_served.load(Ordering::Relaxed),
        ),
        (
            "sluiceway_isr_shrinks_total",
            "In-sync replica set shrinks this broker wrote as a leader.",
            m.isr_shrinks.load(Ordering::Relaxed),
        ),
        (
            "sluiceway_isr_expands_total",
            "In-sync replica set expansions this broker wrote as a leader.",
            m.isr_expands.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    // Leader-only gauges: only the leader knows the in-sync set.
    let _ = writeln!(
        out,
        "# HELP sluiceway_partition_isr_size In-sync replicas of the partitions this broker leads.\n\
         # TYPE sluiceway_partition_isr_size gauge\n\
         # HELP sluiceway_partition_under_replicated 1 when a partition this broker leads has fewer in-sync replicas than replicas.\n\
         # TYPE sluiceway_partition_under_replicated gauge"
    );
    for p in &snapshot.partitions {
        if let Some(isr) = p.isr_size {
            let labels = format!(
                "topic=\"{}\",partition=\"{}\"",
                escape(&p.topic),
                p.partition
            );
            let _ = writeln!(
                out,
                "sluiceway_partition_isr_size{{{labels}}} {isr}\nsluiceway_partition_under_replicated{{{labels}}} {}",
                u8::from(isr < p.replica_count)
            );
        }
    }
    let gauges: [(&str, &str, &str); 11] = [
        (
            "sluiceway_partition_log_end_offset",
            "gauge",
            "The offset the next appended message gets.",
        ),
        (
            "sluiceway_partition_high_watermark",
            "gauge",
            "Consumers see offsets below it.",
        ),
        (
            "sluiceway_partition_log_start_offset",
            "gauge",
            "The first offset still in the log.",
        ),
        (
            "sluiceway_partition_size_bytes",
            "gauge",
            "Bytes of log segments on disk.",
        ),
        (
            "sluiceway_partition_produced_messages_total",
            "counter",
            "Messages appended since the broker started.",
        ),
        (
            "sluiceway_partition_produced_bytes_total",
            "counter",
            "Message-set bytes appended since the broker started.",
        ),
        (
            "sluiceway_partition_fetched_bytes_total",
            "counter",
            "Message-set bytes returned to fetches since the broker started.",
        ),
        (
            "sluiceway_partition_duplicate_batches_total",
            "counter",
            "Idempotent producers' retries answered with their first offsets, nothing written.",
        ),
        (
            "sluiceway_partition_replicated_bytes_total",
            "counter",
            "Message-set bytes served to followers (leader) or appended from the leader (follower).",
        ),
        (
            "sluiceway_partition_produce_order_waits_total",
            "counter",
            "Pipelined produce requests that waited for an earlier request of their producer.",
        ),
        (
            "sluiceway_partition_produce_order_refusals_total",
            "counter",
            "Pipelined produce requests refused: sent behind one that failed, or their earlier requests not handled in time.",
        ),
    ];
    for (name, kind, help) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in &snapshot.partitions {
            let v = match name {
                "sluiceway_partition_log_end_offset" => p.log_end_offset,
                "sluiceway_partition_high_watermark" => p.high_watermark,
                "sluiceway_partition_log_start_offset" => p.log_start_offset,
                "sluiceway_partition_size_bytes" => p.size_bytes,
                "sluiceway_partition_produced_messages_total" => p.produced_messages,
                "sluiceway_partition_produced_bytes_total" => p.produced_bytes,
                "sluiceway_partition_fetched_bytes_total" => p.fetched_bytes,
                "sluiceway_partition_duplicate_batches_total" => p.duplicate_batches,
                "sluiceway_partition_produce_order_waits_total" => p.produce_order_waits,
                "sluiceway_partition_produce_order_refusals_total" => p.produce_order_refusals,
                _ => p.replicated_bytes,
            };
            let _ = writeln!(
                out,
                "{name}{{topic=\"{}\",partition=\"{}\"}} {v}",
                escape(&p.topic),
                p.partition
            );
        }
    }
    out
}
