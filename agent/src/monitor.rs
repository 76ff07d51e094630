//! One loop per Redis instance: probe, apply hysteresis, export, publish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use larder_registry::model::NodeHealth;
use larder_registry::{Registry, SessionStatus};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Instance};
use crate::cve::vulnerable_lua;
use crate::error::AgentError;
use crate::health::Hysteresis;
use crate::metrics::{InstanceMetrics, Metrics};
use crate::probe::{Prober, Sample};
use crate::publish::{PublishError, PublishPolicy, Publisher};

/// Watches one Redis instance until cancelled.
pub struct Monitor {
    instance: Instance,
    agent: String,
    interval: Duration,
    /// `heartbeat_interval_ms`, written into every record.
    heartbeat_ms: u64,
    prober: Prober,
    health: Hysteresis,
    policy: PublishPolicy,
    publisher: Publisher,
    session: watch::Receiver<SessionStatus>,
    metrics: InstanceMetrics,
    /// The last successful probe; a down record still carries what was last known
    /// (role, master, version), which a failover decision needs.
    last: Option<Sample>,
    probe_failing: bool,
    publish_failing: bool,
    /// The cluster was not registered at the last attempt; only a cheap existence check
    /// runs until it is.
    unregistered: bool,
}

impl Monitor {
    pub fn new(
        config: &Config,
        instance: &Instance,
        registry: &Registry,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, AgentError> {
        Ok(Self {
            instance: instance.clone(),
            agent: config.id.clone(),
            interval: Duration::from_millis(config.probe_interval_ms),
            heartbeat_ms: config.heartbeat_interval_ms,
            prober: Prober::new(instance, Duration::from_millis(config.probe_timeout_ms))?,
            health: Hysteresis::new(config.fail_after, config.recover_after),
            policy: PublishPolicy::new(Duration::from_millis(config.heartbeat_interval_ms)),
            publisher: Publisher::new(registry.clone(), &instance.cluster, &instance.address),
            session: registry.status(),
            metrics: metrics.instance(&instance.address, &instance.cluster),
            last: None,
            probe_failing: false,
            publish_failing: false,
            unregistered: false,
        })
    }

    /// Probes every `probe_interval_ms` (the first at once) until `cancel` fires. A probe
    /// or write in flight is abandoned on cancellation; the record stays until the
    /// registry loop withdraws it.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        // A stalled round (a slow ZooKeeper write) must not be followed by a burst of
        // catch-up probes.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let scheduled = tokio::select! {
                _ = cancel.cancelled() => break,
                at = ticker.tick() => at.into_std(),
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.round(scheduled) => {}
            }
        }
        tracing::debug!("monitor stopped");
    }

    /// One probe and its consequences. `scheduled` is the tick's own instant: heartbeats
    /// are timed by it, so one due every tenth tick goes out on the tenth tick and not,
    /// by the probe's own jitter, on the eleventh.
    async fn round(&mut self, scheduled: Instant) {
        let started = Instant::now();
        let outcome = self.prober.probe().await;
        let took = started.elapsed();
        let ok = match outcome {
            Ok(sample) => {
                let vulnerable = vulnerable_lua(&sample.info.redis_version);
                self.metrics.probe_succeeded(took, &sample.info, vulnerable);
                if self.probe_failing {
                    tracing::info!("probe succeeds again");
                }
                self.probe_failing = false;
                self.last = Some(sample);
                true
            }
            Err(error) => {
                self.metrics.probe_failed(took);
                // One line per failure streak; the rest at debug, or a dead Redis would
                // log every second.
                if self.probe_failing {
                    tracing::debug!(%error, "probe failed");
                } else {
                    tracing::warn!(%error, "probe failed");
                }
                self.probe_failing = true;
                false
            }
        };
        let before = self.health.healthy();
        let healthy = self.health.observe(ok);
        if before != Some(healthy) {
            if healthy {
                tracing::info!("instance is up");
            } else {
                tracing::warn!("instance is down");
            }
        }
        self.metrics.set_healthy(healthy);
        let record = self.record(healthy);
        self.publish(&record, scheduled).await;
    }

    /// The health record for the current state.
    fn record(&self, up: bool) -> NodeHealth {
        let mut record = NodeHealth {
            endpoint: self.instance.address.clone(),
            agent: self.agent.clone(),
            up,
            reported_at_ms: larder_registry::now_ms(),
            heartbeat_ms: self.heartbeat_ms,
            ..NodeHealth::default()
        };
        if let Some(Sample { latency_us, info }) = &self.last {
            record.role = info.role;
            record.master = info.master();
            record.master_link_up = info.master_link_up();
            record.replication_offset = info.replication_offset();
            record.used_memory_bytes = info.used_memory;
            record.max_memory_bytes = info.maxmemory;
            record.connected_clients = info.connected_clients;
            record.ops_per_sec = info.instantaneous_ops_per_sec;
            record.latency_us = *latency_us;
            record.redis_version = info.redis_version.clone();
            record.vulnerable_lua = vulnerable_lua(&info.redis_version);
            record.uptime_s = info.uptime_in_seconds;
        }
        record
    }

    async fn publish(&mut self, record: &NodeHealth, now: Instant) {
        if !self.session.borrow().connected {
            // A write now would only wait out its timeout and hold up probing. The
            // registry restores the last record when the session returns; forgetting
            // makes the first round after that write a fresh one.
            self.policy.forget();
            return;
        }
        if self.unregistered {
            match self.publisher.cluster_registered().await {
                Ok(true) => {
                    tracing::info!("cluster is registered now; publishing health");
                    self.unregistered = false;
                }
                Ok(false) => return,
                Err(error) => return self.publish_failed(error),
            }
        }
        if !self.policy.due(record, now) {
            return;
        }
        match self.publisher.publish(record).await {
            Ok(()) => {
                self.policy.written(record, now);
                if self.publish_failing {
                    tracing::info!("publishing health again");
                }
                self.publish_failing = false;
            }
            Err(error) => self.publish_failed(error),
        }
    }

    fn publish_failed(&mut self, error: PublishError) {
        match error {
            PublishError::Unregistered => {
                tracing::warn!(
                    cluster = %self.instance.cluster,
                    "cluster is not registered; probing goes on and health is published once it is"
                );
                self.unregistered = true;
                self.policy.forget();
            }
            PublishError::Registry(error) => {
                self.metrics.publish_failed();
                if self.publish_failing {
                    tracing::debug!(%error, "cannot publish health");
                } else {
                    tracing::warn!(%error, "cannot publish health");
                }
                self.publish_failing = true;
            }
        }
    }
}
