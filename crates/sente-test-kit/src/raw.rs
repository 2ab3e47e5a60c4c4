//! Raw HTTP requests, for scenarios that need to send what no well-behaved client sends.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sente_proto::client::url::url_encode;

/// POSTs an edn envelope `ppstr` as Sente's Ajax client would (client id `raw-<uid>`), with
/// `?uid=<uid>` so the test server files it under that uid. Returns status and body.
pub async fn post_edn(
    url: &str,
    uid: &str,
    ppstr: &str,
    csrf_token: &str,
) -> Result<(u16, String), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = format!(
        "udt=0&client-id=raw-{}&ppstr={}",
        url_encode(uid),
        url_encode(ppstr)
    );
    let req = http::Request::post(format!("{url}?uid={}", url_encode(uid)))
        .header(
            "Content-Type",
            "application/x-www-form-urlencoded;charset=UTF-8",
        )
        .header("X-CSRF-Token", csrf_token)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// GETs `url` as Sente's Ajax client would (`X-CSRF-Token`, `X-Requested-With`). Returns
/// status and body.
pub async fn get(url: &str, csrf_token: &str) -> Result<(u16, Bytes), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::get(url)
        .header("X-CSRF-Token", csrf_token)
        .header("X-Requested-With", "XMLHTTPRequest")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}
