//! A Prometheus scrape read with a real text-format parser (`prometheus-parse`), and the sums
//! tests assert on.

use prometheus_parse::{Sample, Value};

/// One scrape of a `/metrics` endpoint.
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// GETs `url` and parses the answer; panics when it is not the text format.
    pub async fn fetch(http: &reqwest::Client, url: &str) -> Self {
        let response = http.get(url).send().await.expect("scrape");
        assert_eq!(
            response.status(),
            reqwest::StatusCode::OK,
            "scrape of {url}"
        );
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = response.text().await.expect("scrape body");
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("valid Prometheus text format");
        Self {
            text,
            samples: parsed.samples,
        }
    }

    /// The samples of `metric` whose labels include every pair of `labels`.
    pub fn matching<'a>(
        &'a self,
        metric: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.metric == metric
                && labels
                    .iter()
                    .all(|(name, value)| s.labels.get(name) == Some(*value))
        })
    }

    /// The sum of the matching counters or gauges (a histogram or summary counts its
    /// observations); 0 when there is none.
    pub fn sum(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(metric, labels)
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
                Value::Summary(_) => 0.0,
            })
            .sum()
    }

    /// Whether any series of `metric` exists.
    pub fn has(&self, metric: &str) -> bool {
        self.matching(metric, &[]).next().is_some()
    }

    /// Every metric name of the scrape, as Prometheus stores them (`_bucket`, `_sum`, `_count`
    /// for histograms).
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        for sample in &self.samples {
            match &sample.value {
                Value::Histogram(_) | Value::Summary(_) => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{}{suffix}", sample.metric));
                    }
                }
                _ => {}
            }
            names.insert(sample.metric.clone());
        }
        names
    }
}
