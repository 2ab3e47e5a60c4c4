//! [`RustClient`]: the native `sente-client` as a [`ClientFactory`].

use crate::scenario::{BoxFut, ClientFactory, ClientSpec, ClientUnderTest};
use futures_util::StreamExt;
use sente_client::{Client, EventStream};
use sente_proto::client::RequestError;
use sente_proto::{Event, Value};
use std::time::Duration;

/// The native (tokio) Rust client.
#[derive(Clone, Copy, Debug, Default)]
pub struct RustClient;

struct Cut {
    client: Client,
    events: EventStream,
}

impl ClientFactory for RustClient {
    fn name(&self) -> &'static str {
        "rust-native"
    }

    fn can_set_headers(&self) -> bool {
        true
    }

    fn reports_rejection_status(&self) -> bool {
        true
    }

    fn connect(&self, spec: ClientSpec) -> BoxFut<'_, Result<Box<dyn ClientUnderTest>, String>> {
        Box::pin(async move {
            let mut b = Client::builder(spec.url)
                .kind(spec.kind)
                .packer_name(spec.packer);
            if let Some(t) = spec.csrf_token {
                b = b.csrf_token(t);
            }
            for (k, v) in spec.params {
                b = b.param(k, v);
            }
            for (k, v) in spec.headers {
                b = b.header(k, v);
            }
            // Quick retries keep the rejection and restart scenarios short.
            let client = b
                .rejected_retry(Duration::from_secs(2))
                .connect()
                .map_err(|e| e.to_string())?;
            let events = client.events();
            Ok(Box::new(Cut { client, events }) as Box<dyn ClientUnderTest>)
        })
    }
}

impl ClientUnderTest for Cut {
    fn send(&mut self, event: Event) -> Result<(), String> {
        self.client.send(event).map_err(|e| e.to_string())
    }

    fn request(
        &mut self,
        event: Event,
        timeout: Duration,
    ) -> BoxFut<'_, Result<Value, RequestError>> {
        Box::pin(self.client.request(event, timeout))
    }

    fn next_event(&mut self, timeout: Duration) -> BoxFut<'_, Option<Event>> {
        Box::pin(async move {
            tokio::time::timeout(timeout, self.events.next())
                .await
                .ok()
                .flatten()
                .map(|e| e.to_event())
        })
    }

    fn state(&mut self) -> Value {
        self.client.state().borrow().to_value()
    }

    fn disconnect(&mut self) {
        self.client.disconnect();
    }
}
