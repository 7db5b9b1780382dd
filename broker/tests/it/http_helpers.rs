//! Shared helpers of the HTTP tests: a broker served on 127.0.0.1:0 over a
//! fresh temporary directory, a client for it, and a check of JSON error
//! answers.

use axum::http::{StatusCode, header};
use broker::http_api::ApiAccess;
use broker::http_api::ErrorBody;
use broker::{Broker, BrokerConfig, BrokerHttpClient, router};

/// The tests' broker key (a test key: no deployment uses it).
pub(crate) const TEST_BROKER_KEY: &str = "test-only broker key 0123456789abcdef";

/// The API's access in tests: [`TEST_BROKER_KEY`], and check-backs to
/// loopback only.
pub(crate) fn test_access() -> ApiAccess {
    ApiAccess::new(TEST_BROKER_KEY)
        .expect("a long enough key")
        .allow_checker_host("http://127.0.0.1")
        .expect("a host")
}

/// A raw client presenting [`TEST_BROKER_KEY`] on every request.
pub(crate) fn keyed_http() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TEST_BROKER_KEY}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Small segments and messages, so limits are reachable in a test; no
/// auto-creation, so unknown topics are errors.
pub(crate) fn test_config(dir: &std::path::Path) -> BrokerConfig {
    let mut config = BrokerConfig::new(dir);
    config.segment_size = 64 * 1024;
    config.max_message_size = 16 * 1024;
    config.auto_create_topics = false;
    // Tests must not depend on how full the machine's disk is.
    config.max_disk_usage_ratio = 1.0;
    config
}

/// A broker served over HTTP on a free port.
pub(crate) struct TestApp {
    pub(crate) broker: Broker,
    pub(crate) client: BrokerHttpClient,
    pub(crate) base_url: String,
    pub(crate) http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A broker with [`test_config`], served on a free port.
pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with `configure` applied to the config first.
pub(crate) async fn spawn_app_with(configure: impl FnOnce(&mut BrokerConfig)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path());
    configure(&mut config);
    // Inside the test's runtime: the broker spawns its service tasks.
    let broker = Broker::open(config).expect("open broker");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("local addr");
    let app = router(broker.clone(), test_access());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    let base_url = format!("http://{addr}");
    TestApp {
        client: BrokerHttpClient::new(&base_url, TEST_BROKER_KEY).expect("client"),
        http: keyed_http(),
        broker,
        base_url,
        server,
        _dir: dir,
    }
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// POSTs `body` with an explicit content type (batches, malformed input).
    pub(crate) async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .expect("request")
    }

    pub(crate) async fn put_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }
}

/// Checks an error answer: its status, a JSON content type and its code.
pub(crate) async fn expect_error(
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
) -> ErrorBody {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type:?}"
    );
    let body: ErrorBody = response.json().await.expect("a JSON error body");
    assert_eq!(body.code, code, "error body {body:?}");
    assert!(!body.error.is_empty());
    body
}
