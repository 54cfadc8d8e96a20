//! Where workers find the bulk plane: advertised on `/register` and on a bulk path's 404 on
//! the control plane ([`diloco_contract::api::BULK_URL_HEADER`]).

use std::net::SocketAddr;

use axum::http::{HeaderMap, header};

/// Where workers find the bulk plane.
#[derive(Clone, Debug)]
pub struct BulkAdvert {
    /// The bulk listener's bound address.
    pub addr: SocketAddr,
    /// Whether it speaks TLS.
    pub tls: bool,
    /// A fixed URL to advertise instead (`bulk.advertise_url`, e.g. the bulk Service's DNS
    /// name when a Service sits in front of the pod).
    pub fixed_url: Option<String>,
}

impl BulkAdvert {
    /// The URL a worker should use: the bound host, or for a wildcard bind the host the
    /// worker itself used to reach the control plane (its `Host` header).
    pub fn url(&self, headers: &HeaderMap) -> String {
        if let Some(url) = &self.fixed_url {
            return url.clone();
        }
        let scheme = if self.tls { "https" } else { "http" };
        let port = self.addr.port();
        let ip = self.addr.ip();
        let host = if ip.is_unspecified() {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
                .map(|a| a.host().to_string())
                .unwrap_or_else(|| "127.0.0.1".into())
        } else if ip.is_ipv6() {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        format!("{scheme}://{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// A wildcard bind advertises the host the worker reached the control plane by.
    #[test]
    fn a_wildcard_bind_advertises_the_host_the_worker_used() {
        let advert = BulkAdvert {
            addr: "0.0.0.0:8513".parse().unwrap(),
            tls: true,
            fixed_url: None,
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::HOST,
            HeaderValue::from_static("llm-control.ml.svc:8512"),
        );
        assert_eq!(advert.url(&headers), "https://llm-control.ml.svc:8513");
        assert_eq!(advert.url(&HeaderMap::new()), "https://127.0.0.1:8513");
        let v6 = BulkAdvert {
            addr: "[::1]:9000".parse().unwrap(),
            tls: false,
            fixed_url: None,
        };
        assert_eq!(v6.url(&headers), "http://[::1]:9000");
    }
}
