//! The example answers an echo, pushes three events and serves the JavaScript client: the
//! check shared by every echo example (`sente_test_kit::check_echo_example`).

#[tokio::test]
async fn echo_and_push() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = actix_echo::app(listener).unwrap();
    let handle = server.handle();
    tokio::spawn(server);

    sente_test_kit::check_echo_example(addr).await;
    handle.stop(false).await;
}
