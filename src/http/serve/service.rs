//! The router as hyper's service on one connection: the peer address for `ConnectInfo`, the
//! connection's phase kept up to date, and heads with two framings refused.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper::body::Incoming;
use tower::ServiceExt;

use super::io::ConnState;
use crate::http::error::detail_response;

/// The router as hyper's service for one connection: adds `ConnectInfo`, keeps the
/// connection's phase, and refuses heads with both `Content-Length` and `Transfer-Encoding`.
pub(super) struct ConnService {
    pub(super) router: Router,
    pub(super) peer: SocketAddr,
    pub(super) state: Arc<ConnState>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        self.state.begin_request();
        let done = RequestDone(self.state.clone());
        if self.state.take_both_lengths() {
            // Request smuggling hygiene: a proxy in front may have framed this body by the other
            // header. RFC 9112 section 6.1 lets a server refuse it; the connection is closed.
            // Answered before the middleware, so logged here (without the target, which the
            // two framings make ambiguous).
            tracing::info!(
                status = 400,
                "refused a request with both Content-Length and Transfer-Encoding"
            );
            let mut response = detail_response(
                StatusCode::BAD_REQUEST,
                "Content-Length and Transfer-Encoding must not both be sent",
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Box::pin(std::future::ready(Ok(
                response.map(|body| ResponseBody { body, _done: done })
            )));
        }
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let router = self.router.clone();
        let state = self.state.clone();
        Box::pin(async move {
            let Ok(mut response) = router.oneshot(req).await;
            if state.closing() {
                // The server is shutting down and closes this connection after the response:
                // said so, the client does not send another request on it.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response.map(|body| ResponseBody { body, _done: done }))
        })
    }
}

/// Marks the end of a request when dropped: hyper drops the response body once it is written
/// (or the whole request if the client went away).
struct RequestDone(Arc<ConnState>);

impl Drop for RequestDone {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// A response body that ends the connection's busy phase when hyper is done with it.
pub(super) struct ResponseBody {
    body: Body,
    _done: RequestDone,
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
