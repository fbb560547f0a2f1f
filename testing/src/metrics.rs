//! Reading a broker's Prometheus text (`/metrics`): the values tests wait on.

/// The value of the sample `series` (a metric name with its labels exactly as rendered, e.g.
/// `sluiceway_requests_total{request="fetch"}`) in a `/metrics` answer, or `None` when absent.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}
