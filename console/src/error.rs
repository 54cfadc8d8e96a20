//! Every refusal the console answers with: a status and a [`ConsoleError`] body. The console's
//! own refusals never carry [`UPSTREAM_AUTH_FAILED_HEADER`]; only [`ApiError::upstream_auth`]
//! (the coordinator refused the console's credential) does.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use diloco_contract::console::{ConsoleError, UPSTREAM_AUTH_FAILED_HEADER};

/// A refusal: status, message, and whether it is the coordinator's auth refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The status answered.
    pub status: StatusCode,
    /// The body.
    pub body: ConsoleError,
    upstream_auth_failed: bool,
}

impl ApiError {
    /// A refusal of the console's own with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ConsoleError {
                error: message.into(),
                upstream_status: None,
            },
            upstream_auth_failed: false,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: not signed in (the page shows the login form).
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403: the console refuses the user.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 500: a fault of the console itself.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 502: the Kubernetes API or a coordinator could not be asked.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, message)
    }

    /// The coordinator answered `status` (401 or 403) to the console's own credential: the
    /// same status, tagged with [`UPSTREAM_AUTH_FAILED_HEADER`].
    pub fn upstream_auth(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ConsoleError {
                error: message.into(),
                upstream_status: Some(status.as_u16()),
            },
            upstream_auth_failed: true,
        }
    }

    /// Whether the reply will carry [`UPSTREAM_AUTH_FAILED_HEADER`].
    pub fn is_upstream_auth_failure(&self) -> bool {
        self.upstream_auth_failed
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.body.error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(&self.body)).into_response();
        if self.upstream_auth_failed {
            response
                .headers_mut()
                .insert(UPSTREAM_AUTH_FAILED_HEADER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED && !self.upstream_auth_failed {
            // Programs learn how to authenticate; a browser shows the login form instead.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"diloco-console\""),
            );
        }
        response
    }
}

/// A Kubernetes API failure as the console answers it: 502, with what was being done.
pub fn kube_failure(doing: &str, error: &kube::Error) -> ApiError {
    match error {
        kube::Error::Api(status) => ApiError::bad_gateway(format!(
            "failed to {doing}: the Kubernetes API answered {} ({})",
            status.code, status.message
        )),
        _ => ApiError::bad_gateway(format!(
            "failed to {doing}: the Kubernetes API cannot be reached"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the coordinator's refusal is tagged; the console's own 401 asks for a login.
    #[test]
    fn only_upstream_refusals_carry_the_header() {
        let own = ApiError::unauthenticated("not signed in").into_response();
        assert!(own.headers().get(UPSTREAM_AUTH_FAILED_HEADER).is_none());
        assert!(own.headers().get(header::WWW_AUTHENTICATE).is_some());
        let upstream = ApiError::upstream_auth(StatusCode::UNAUTHORIZED, "refused").into_response();
        assert_eq!(upstream.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(upstream.headers()[UPSTREAM_AUTH_FAILED_HEADER], "1");
        assert!(upstream.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
