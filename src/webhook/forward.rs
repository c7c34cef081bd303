//! Another shard's events go to it (`webhook.peer_url`), with the same secret. A forward
//! that fails is dropped, never retried: the owner's polls reconcile the project.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tracing::warn;

use super::FORWARDED_HEADER;
use crate::config::PeerUrl;
use crate::metrics::Metrics;

/// Forwards in flight, at most; beyond it events are dropped (a dead peer must not pile up
/// tasks waiting for their timeout).
const MAX_IN_FLIGHT: usize = 32;
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Forwarder {
    http: reqwest::Client,
    peer: PeerUrl,
    secret: SecretString,
    /// This replica's shard, sent along for the log of the receiving one.
    from: u32,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    pub fn new(
        peer: PeerUrl,
        secret: SecretString,
        from: u32,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        crate::gitlab::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            // The secret goes with it: never to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            peer,
            secret,
            from,
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            metrics,
        })
    }

    /// Sends `body` to shard `to` in the background; counts `forwarded` or `dropped`.
    pub fn forward(&self, to: u32, body: Bytes, idempotency_key: Option<String>) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.metrics.webhook_event("job", "dropped");
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let url = me.peer.for_shard(to);
            let mut req = me
                .http
                .post(&url)
                .header("content-type", "application/json")
                .header("x-gitlab-event", "Job Hook")
                .header("x-gitlab-token", me.secret.expose_secret())
                .header(FORWARDED_HEADER, me.from.to_string())
                .body(body);
            if let Some(k) = idempotency_key {
                req = req.header("idempotency-key", k);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => me.metrics.webhook_event("job", "forwarded"),
                Ok(r) => {
                    me.metrics.webhook_event("job", "dropped");
                    warn!(
                        shard = to,
                        status = r.status().as_u16(),
                        "forwarding a webhook event to its shard failed; its polls will count the job"
                    );
                }
                Err(e) => {
                    me.metrics.webhook_event("job", "dropped");
                    // reqwest's error names the URL, never headers: the secret stays out.
                    warn!(shard = to, error = %e.without_url(),
                        "forwarding a webhook event to its shard failed; its polls will count the job");
                }
            }
        });
    }
}
