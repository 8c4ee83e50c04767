//! A local Kubernetes API server for tests: any collection by its path, listed and watched
//! the way the API server does it (resourceVersions, watch events as JSON lines, field and
//! label selectors, `410 Gone` on demand), and single objects by path.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

/// An open watch: its collection, field and label selectors, and where its lines go.
type Watch = (
    String,
    Option<String>,
    Option<String>,
    mpsc::UnboundedSender<String>,
);

#[derive(Default)]
struct State {
    /// Collection path -> objects by name.
    objects: HashMap<String, BTreeMap<String, serde_json::Value>>,
    /// Single objects by path.
    singles: HashMap<String, serde_json::Value>,
    version: u64,
    watchers: Vec<Watch>,
    lists: HashMap<String, usize>,
    field_selectors: Vec<String>,
}

/// The server. Cheap to clone.
#[derive(Clone)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
    pub addr: SocketAddr,
}

/// Whether `object` matches a `a.b=c` field selector or a `k=v` label selector.
fn matches(object: &serde_json::Value, fields: Option<&str>, labels: Option<&str>) -> bool {
    let field_ok = fields.is_none_or(|sel| {
        sel.split(',').all(|term| match term.split_once('=') {
            Some((path, want)) => {
                let pointer = format!("/{}", path.replace('.', "/"));
                object.pointer(&pointer).and_then(|v| v.as_str()) == Some(want)
            }
            None => true,
        })
    });
    let label_ok = labels.is_none_or(|sel| {
        sel.split(',').all(|term| match term.split_once('=') {
            Some((k, want)) => {
                object
                    .get("metadata")
                    .and_then(|m| m.get("labels"))
                    .and_then(|l| l.get(k))
                    .and_then(|v| v.as_str())
                    == Some(want)
            }
            None => true,
        })
    });
    field_ok && label_ok
}

fn json(status: u16, body: &serde_json::Value) -> hyper::Response<BoxBody<Bytes, Infallible>> {
    let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
    let mut r = hyper::Response::new(Full::new(bytes).boxed());
    *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn decode(v: &str) -> String {
    v.replace("%3D", "=")
        .replace("%2F", "/")
        .replace("%2C", ",")
}

impl ApiServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state: Arc<Mutex<State>> = Arc::default();
        state.lock().expect("state").version = 100;
        let served = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let state = Arc::clone(&state);
                            async move { Ok::<_, Infallible>(handle(&state, &req)) }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { state, addr }
    }

    /// A client for this server.
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().expect("url");
        kube::Client::try_from(kube::Config::new(url)).expect("client")
    }

    fn event(state: &mut State, collection: &str, kind: &str, object: &serde_json::Value) {
        let mut e = serde_json::Map::new();
        e.insert("type".into(), kind.into());
        e.insert("object".into(), object.clone());
        let line = format!("{}\n", serde_json::Value::Object(e));
        state.watchers.retain(|(path, fields, labels, tx)| {
            if path != collection
                || (kind != "ERROR" && !matches(object, fields.as_deref(), labels.as_deref()))
            {
                return true;
            }
            tx.send(line.clone()).is_ok()
        });
    }

    /// Add or change an object (`ADDED` or `MODIFIED` to watchers).
    pub fn put(&self, collection: &str, mut object: serde_json::Value) {
        let mut s = self.state.lock().expect("state");
        s.version += 1;
        let v = s.version.to_string();
        object["metadata"]["resourceVersion"] = v.into();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let objects = s.objects.entry(collection.to_string()).or_default();
        let kind = if objects.contains_key(&name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        objects.insert(name, object.clone());
        Self::event(&mut s, collection, kind, &object);
    }

    /// Delete an object by name (`DELETED` to watchers).
    pub fn delete(&self, collection: &str, name: &str) {
        let mut s = self.state.lock().expect("state");
        s.version += 1;
        let v = s.version.to_string();
        let removed = s.objects.get_mut(collection).and_then(|o| o.remove(name));
        if let Some(mut object) = removed {
            object["metadata"]["resourceVersion"] = v.into();
            Self::event(&mut s, collection, "DELETED", &object);
        }
    }

    /// End every watch of `collection` with `410 Gone`, as when a resourceVersion is too old.
    pub fn gone(&self, collection: &str) {
        let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired", "message": "too old resource version"});
        let mut s = self.state.lock().expect("state");
        Self::event(&mut s, collection, "ERROR", &status);
    }

    /// Close every open watch without a word, as a restarted API server or a load
    /// balancer would.
    pub fn drop_watches(&self) {
        self.state.lock().expect("state").watchers.clear();
    }

    /// How many watches are open on `collection`.
    pub fn watches(&self, collection: &str) -> usize {
        self.state
            .lock()
            .expect("state")
            .watchers
            .iter()
            .filter(|w| w.0 == collection)
            .count()
    }

    /// Serve `object` at `path`.
    pub fn single(&self, path: &str, object: serde_json::Value) {
        self.state
            .lock()
            .expect("state")
            .singles
            .insert(path.to_string(), object);
    }

    /// How many times `collection` was listed.
    pub fn lists(&self, collection: &str) -> usize {
        *self
            .state
            .lock()
            .expect("state")
            .lists
            .get(collection)
            .unwrap_or(&0)
    }

    /// Every field selector lists were asked with.
    pub fn field_selectors(&self) -> Vec<String> {
        self.state.lock().expect("state").field_selectors.clone()
    }
}

fn handle(
    state: &Arc<Mutex<State>>,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<BoxBody<Bytes, Infallible>> {
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), decode(v)))
        .collect();
    let fields = query.get("fieldSelector").cloned();
    let labels = query.get("labelSelector").cloned();
    let mut s = state.lock().expect("state");
    if let Some(single) = s.singles.get(&path) {
        return json(200, single);
    }
    if !s.objects.contains_key(&path) {
        return json(
            404,
            &serde_json::json!({"kind": "Status", "apiVersion": "v1", "code": 404, "reason": "NotFound", "message": path}),
        );
    }
    if query.get("watch").map(String::as_str) == Some("true") {
        let (tx, rx) = mpsc::unbounded_channel::<String>();
        s.watchers.push((path, fields, labels, tx));
        let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|line| (Ok::<_, Infallible>(Frame::data(Bytes::from(line))), rx))
        }));
        let mut r = hyper::Response::new(body.boxed());
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return r;
    }
    *s.lists.entry(path.clone()).or_default() += 1;
    s.field_selectors.extend(fields.clone());
    let version = s.version.to_string();
    let items: Vec<serde_json::Value> = s.objects[&path]
        .values()
        .filter(|o| matches(o, fields.as_deref(), labels.as_deref()))
        .cloned()
        .collect();
    json(
        200,
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": version}, "items": items}),
    )
}
