//! The browser build used to measure the wasm size budget: a `start(url)` export that connects
//! and logs every event to the console.
//!
//! ```text
//! cargo build -p sente-client --target wasm32-unknown-unknown --profile wasm --example browser
//! wasm-bindgen --target web --out-dir pkg target/wasm32-unknown-unknown/wasm/examples/browser.wasm
//! ```
#![cfg(target_arch = "wasm32")]

/// The exported entry point.
pub mod browser {
    use futures_util::StreamExt;
    use sente_client::Client;
    use wasm_bindgen::prelude::*;

    /// Connects to `url` (e.g. `http://127.0.0.1:3000/chsk`) and logs events to the console.
    #[wasm_bindgen]
    pub fn start(url: &str, csrf_token: Option<String>) -> Result<(), JsValue> {
        let mut b = Client::builder(url);
        if let Some(t) = csrf_token {
            b = b.csrf_token(t);
        }
        let client = b.connect().map_err(|e| JsValue::from_str(&e.to_string()))?;
        let mut events = client.events();
        wasm_bindgen_futures::spawn_local(async move {
            let _keep = client;
            while let Some(ev) = events.next().await {
                web_sys::console::log_1(&ev.to_event().to_value().to_string().into());
            }
        });
        Ok(())
    }
}
