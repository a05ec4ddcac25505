//! The AWS SDK configuration S3 and SQS clients share: the standard AWS
//! environment, overridden by an [`S3Config`]'s endpoint, region and
//! credentials; rustls with ring; our own timeouts; the SDK's retries off
//! (our loops retry, so every attempt's error is kept).

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region};

use crate::s3::{CONNECT_TIMEOUT, READ_TIMEOUT, S3Config};

/// Loads the SDK configuration for `config` (no request is made).
pub(crate) async fn sdk_config(config: &S3Config) -> aws_config::SdkConfig {
    // rustls with ring: no cmake, Go or nasm needed to build.
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
                .build(),
        )
        .retry_config(RetryConfig::disabled());
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    if let Some(c) = &config.credentials {
        loader = loader.credentials_provider(Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            c.session_token.clone(),
            None,
            "montage-storage",
        ));
    }
    loader.load().await
}
