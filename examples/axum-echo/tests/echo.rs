//! The example answers an echo, pushes three events and serves the JavaScript client: the
//! check shared by every echo example (`sente_test_kit::check_echo_example`).

#[tokio::test]
async fn echo_and_push() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum_echo::app().unwrap();
    tokio::spawn(sente::serve(listener, app, sente::ServeConfig::default()));

    sente_test_kit::check_echo_example(addr).await;
}
