//! The browser build: a small JS API over the client, used for the wasm size budget and by the
//! browser end-to-end test (`e2e/tests/wasm.test.mjs`, page `e2e/wasm-page/`). Values cross the
//! boundary as edn text.
//!
//! ```text
//! cargo build -p sente-client --target wasm32-unknown-unknown --profile wasm --example browser
//! wasm-bindgen --target web --out-dir pkg target/wasm32-unknown-unknown/wasm/examples/browser.wasm
//! ```
//!
//! ```js
//! import init, { start } from "./pkg/browser.js";
//! await init();
//! const chsk = start("http://127.0.0.1:3000/chsk", token, "ws", { uid: "alice" }, (ev) => console.log(ev));
//! const reply = await chsk.request("demo/echo", "{:n 1}", 5000); // "{:n 1}"
//! ```
#![cfg(target_arch = "wasm32")]

/// The exported API.
pub mod browser {
    use futures_util::StreamExt;
    use sente_client::{Client, Event, EventId, Kind, RequestError, edn};
    use std::time::Duration;
    use wasm_bindgen::prelude::*;

    fn err(e: impl std::fmt::Display) -> JsValue {
        JsValue::from_str(&e.to_string())
    }

    fn event(id: &str, data_edn: &str) -> Result<Event, JsValue> {
        let id = EventId::new(id).map_err(err)?;
        let data = edn::read(data_edn, &edn::ReadOptions::default()).map_err(err)?;
        Ok(Event::new(id, data))
    }

    /// A running client, returned by [`start`].
    #[wasm_bindgen]
    pub struct Chsk(Client);

    /// Connects to `url` (e.g. `http://127.0.0.1:3000/chsk`) over `kind` (`"auto"`, the default,
    /// `"ws"` or `"ajax"`) with extra query `params` (an object of strings), and calls
    /// `on_event(edn)` with every event (`[:chsk/state ..]`, `[:chsk/handshake ..]`, pushes), or
    /// logs them to the console.
    #[wasm_bindgen]
    #[allow(clippy::needless_pass_by_value)] // wasm-bindgen passes JS arguments by value
    pub fn start(
        url: &str,
        csrf_token: Option<String>,
        kind: Option<String>,
        params: Option<js_sys::Object>,
        on_event: Option<js_sys::Function>,
    ) -> Result<Chsk, JsValue> {
        let mut b = Client::builder(url).kind(match kind.as_deref() {
            Some("ws") => Kind::Ws,
            Some("ajax") => Kind::Ajax,
            _ => Kind::Auto,
        });
        if let Some(t) = csrf_token {
            b = b.csrf_token(t);
        }
        for entry in params.iter().flat_map(js_sys::Object::entries) {
            let kv = js_sys::Array::from(&entry);
            let (k, v) = (kv.get(0).as_string(), kv.get(1).as_string());
            b = b.param(k.unwrap_or_default(), v.unwrap_or_default());
        }
        let client = b.connect().map_err(err)?;
        let mut events = client.events();
        let keep = client.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let _keep = keep;
            while let Some(ev) = events.next().await {
                let text = JsValue::from_str(&ev.to_event().to_value().to_string());
                match &on_event {
                    Some(f) => drop(f.call1(&JsValue::NULL, &text)),
                    None => web_sys::console::log_1(&text),
                }
            }
        });
        Ok(Chsk(client))
    }

    #[wasm_bindgen]
    impl Chsk {
        /// Sends `[id data]` and resolves with the reply as edn; rejects with `"closed"`,
        /// `"timeout"` or `"error: .."`.
        pub fn request(
            &self,
            id: &str,
            data_edn: &str,
            timeout_ms: u32,
        ) -> Result<js_sys::Promise, JsValue> {
            let ev = event(id, data_edn)?;
            let client = self.0.clone();
            Ok(wasm_bindgen_futures::future_to_promise(async move {
                let timeout = Duration::from_millis(timeout_ms.into());
                match client.request(ev, timeout).await {
                    Ok(v) => Ok(JsValue::from_str(&v.to_string())),
                    Err(RequestError::Closed) => Err("closed".into()),
                    Err(RequestError::Timeout) => Err("timeout".into()),
                    Err(e) => Err(err(e)),
                }
            }))
        }

        /// Sends `[id data]` without asking for a reply.
        pub fn send(&self, id: &str, data_edn: &str) -> Result<(), JsValue> {
            self.0.send(event(id, data_edn)?).map_err(err)
        }

        /// The state map as edn.
        pub fn state(&self) -> String {
            self.0.state().borrow().to_value().to_string()
        }

        /// Closes the connection and stops reconnecting.
        pub fn disconnect(&self) {
            self.0.disconnect();
        }
    }
}
