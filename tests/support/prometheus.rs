//! The metrics file read back by a strict parser of the Prometheus text
//! format, for the metrics adapter's unit tests and the command-line tests
//! alike: it must parse whole, every family must be a gauge with a HELP
//! line, and each family's samples come back as (labels, value).
//!
//! Include it with `#[path = "support/prometheus.rs"] mod prometheus;` (from
//! `src/adapters/metrics.rs`: `#[path = "../../tests/support/prometheus.rs"]`).
//! Each includer uses a subset, hence the allow.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};

/// A sample's labels as (name, value), sorted by name.
pub type Labels = Vec<(String, String)>;
/// Each family's samples as (labels, value), families by name.
pub type Families = BTreeMap<String, Vec<(Labels, f64)>>;

/// `pairs` as [`Labels`], in the order [`parse`] gives them.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut labels: Labels = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    labels
}

/// `text` read by a strict parser of the text format: it must parse whole,
/// and every family must be a described gauge.
pub fn parse(text: &str) -> Families {
    let parsed: MetricsExposition<PrometheusType, PrometheusValue> = parse_prometheus(text)
        .unwrap_or_else(|e| panic!("not the Prometheus text format ({e}):\n{text}"));
    parsed
        .families
        .iter()
        .map(|(name, family)| {
            assert_eq!(family.family_type, PrometheusType::Gauge, "{name}");
            assert!(!family.help.is_empty(), "{name} has no HELP");
            let samples = family
                .iter_samples()
                .map(|s| {
                    let mut labels: Labels = s
                        .get_labelset()
                        .expect("labels")
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    labels.sort();
                    let value = match &s.value {
                        PrometheusValue::Gauge(n) => n.as_f64(),
                        other => panic!("{name}: not a gauge sample: {other:?}"),
                    };
                    (labels, value)
                })
                .collect();
            (name.clone(), samples)
        })
        .collect()
}

/// The metrics file at `path`, read by [`parse`].
pub fn read(path: &Path) -> Families {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read the metrics file {}: {e}", path.display()));
    parse(&text)
}
