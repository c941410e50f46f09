//! `Metrics`: the app-owned Prometheus registry (never the global default, so two app
//! instances in one test process do not share counters) and its text exposition.

use prometheus::{Encoder as _, IntGaugeVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new(
                "gatehouse_build_info",
                "Build information; the value is always 1",
            ),
            &["version"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(Self { registry })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text format of every registered family.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}
