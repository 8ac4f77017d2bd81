//! SigV4 for Bedrock with the `aws-sigv4` crate: the headers an AWS service checks
//! (`x-amz-date`, `authorization`, `x-amz-security-token` with temporary credentials)
//! added to a request whose URL, headers and body are final.

use aws_sigv4::http_request::{
    sign as sign_request, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use std::time::SystemTime;

/// The service name Bedrock's runtime signs as.
const SERVICE: &str = "bedrock";

pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
}

/// Signs a POST of `body` to `url`, adding the signature's headers to `headers` (which
/// are signed, with the `host` the client will send).
pub fn sign(
    creds: &Credentials<'_>,
    url: &hyper::Uri,
    headers: &mut HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), String> {
    let identity = aws_credential_types::Credentials::new(
        creds.access_key_id,
        creds.secret_access_key,
        creds.session_token.map(str::to_owned),
        None,
        "tollgate",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(creds.region)
        .name(SERVICE)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot sign the Bedrock request: {e}"))?
        .into();
    let host = host(url).ok_or("the Bedrock URL has no host")?;
    let mut signed: Vec<(&str, &str)> = vec![("host", host.as_str())];
    signed.extend(
        headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
    );
    let request = SignableRequest::new(
        "POST",
        url.to_string(),
        signed.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("cannot sign the Bedrock request: {e}"))?;
    let (instructions, _) = sign_request(request, &params)
        .map_err(|e| format!("cannot sign the Bedrock request: {e}"))?
        .into_parts();
    for (name, value) in instructions.headers() {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let mut value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(())
}

/// The `host` the gateway's client sends for `url`: the authority, its port left out
/// when it is the scheme's default.
fn host(url: &hyper::Uri) -> Option<String> {
    let authority = url.authority()?;
    let default = if url.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    Some(match authority.port_u16() {
        Some(port) if port == default => authority.host().to_owned(),
        _ => authority.as_str().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is signed and added; the signature itself is recomputed with botocore by the
    /// fake Bedrock the black-box tests run (`tests/sink/fake_bedrock.py`), for every
    /// request.
    #[test]
    fn the_signature_covers_host_date_and_body() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let url: hyper::Uri = "http://127.0.0.1:9001/model/anthropic.claude-x-v1%3A0/invoke"
            .parse()
            .expect("url");
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token: Some("token"),
            region: "us-east-1",
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        sign(&creds, &url, &mut headers, b"{}", at).expect("signs");
        let auth = headers["authorization"].to_str().expect("ascii");
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="), "{auth}");
        assert_eq!(headers["x-amz-date"], "20150830T123600Z");
        assert_eq!(headers["x-amz-security-token"], "token");
        assert!(headers["authorization"].is_sensitive());
    }
}
