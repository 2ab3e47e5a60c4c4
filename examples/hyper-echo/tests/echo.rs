//! The example answers an echo, pushes three events and serves the JavaScript client: the
//! check shared by every echo example (`sente_test_kit::check_echo_example`).

#[tokio::test]
async fn echo_and_push() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(hyper_echo::serve(listener));

    sente_test_kit::check_echo_example(addr).await;
}

#[tokio::test]
async fn echo_and_push_by_hand() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(hyper_echo::serve_by_hand(listener));

    sente_test_kit::check_echo_example(addr).await;
}
