//! A work queue with SQS semantics, through `aws-sdk-sqs`: Amazon SQS, or a
//! self-hosted engine that speaks its API (ElasticMQ, LocalStack, moto). It
//! is how render nodes *pull* work: a received message is hidden from
//! others for its visibility timeout, its holder extends that lease while
//! it works ([`Queue::extend`]) and deletes the message when done
//! ([`Queue::delete`]); a holder that dies simply lets the lease run out
//! and the message comes back. Delivery is at least once, so what a message
//! asks for must be safe to do twice.
//!
//! The same [`S3Config`] (endpoint, region, credentials, retries) as object
//! storage reaches the queue, from the same standard AWS environment.
//!
//! ```no_run
//! # async fn demo() -> Result<(), storage::StorageError> {
//! use std::time::Duration;
//! use storage::queue::Queue;
//! let queue = Queue::connect("https://sqs.eu-west-1.amazonaws.com/123456789012/jobs", &storage::S3Config::default()).await?;
//! queue.send("{\"row\": 1}").await?;
//! for m in queue.receive(1, Duration::from_secs(20), Duration::from_secs(300)).await? {
//!     println!("{} (delivery {})", m.body, m.receive_count);
//!     queue.delete(&m.receipt).await?;
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

use crate::error::{Result, StorageError};
use crate::s3::{S3Config, classify, retry_loop};
use crate::store::RetryPolicy;

/// The largest message body SQS accepts (256 KiB). Larger payloads go to
/// object storage and the message carries their key.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The longest a receive may wait for a message (SQS's limit for long
/// polling).
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// The longest visibility timeout SQS accepts (12 hours).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// Messages one receive returns at most (SQS's limit).
pub const MAX_RECEIVE: u32 = 10;

/// What proves a received message is ours to extend, release or delete.
#[derive(Clone, PartialEq, Eq)]
pub struct Receipt(String);

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Receipt handles are long and secret-ish: show their start only.
        let short: String = self.0.chars().take(12).collect();
        write!(f, "Receipt({short}…)")
    }
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The queue's id of the message (the same on every delivery).
    pub id: String,
    /// What to hand back to extend, release or delete this delivery.
    pub receipt: Receipt,
    /// The body as sent.
    pub body: String,
    /// How many times the message has been received, this time included
    /// (1 on first delivery).
    pub receive_count: u32,
    /// When it was first received, in milliseconds since the Unix epoch
    /// (the queue's clock), if the engine says.
    pub first_received_ms: Option<u64>,
    /// When it was sent, in milliseconds since the Unix epoch (the queue's
    /// clock), if the engine says.
    pub sent_ms: Option<u64>,
}

/// How many messages wait and how many are held by receivers (approximate,
/// as SQS reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Visible messages waiting to be received.
    pub waiting: u64,
    /// Messages received and not yet deleted or returned.
    pub in_flight: u64,
}

/// A queue's redrive policy: after how many receives a message that was
/// never deleted moves to which dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    /// Receives after which a message moves.
    pub max_receives: u32,
    /// The dead-letter queue's ARN ([`Queue::dead_letter`] finds its URL).
    pub dead_letter_arn: String,
}

/// Settings of a queue [`Queue::create`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    /// The visibility timeout of receives that do not set one.
    pub visibility_timeout: Duration,
    /// A dead-letter queue (by URL) and the receives after which a message
    /// that was never deleted moves there.
    pub dead_letter: Option<(String, u32)>,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            visibility_timeout: Duration::from_secs(300),
            dead_letter: None,
        }
    }
}

/// One queue, by URL.
#[derive(Clone)]
pub struct Queue {
    client: Client,
    url: String,
    retry: RetryPolicy,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Whole seconds for an SQS parameter, refusing what SQS would refuse.
fn seconds(field: &'static str, d: Duration, max: Duration) -> Result<i32> {
    if d > max {
        return Err(StorageError::InvalidConfig {
            field,
            value: format!("{} s", d.as_secs()),
            reason: format!("at most {} s", max.as_secs()),
        });
    }
    i32::try_from(d.as_secs()).map_err(|_| StorageError::InvalidConfig {
        field,
        value: format!("{} s", d.as_secs()),
        reason: "too large".into(),
    })
}

impl Queue {
    /// The queue at `url` (no request is made yet).
    ///
    /// # Errors
    /// [`StorageError::InvalidLocation`] for a URL that is not `http(s)://`,
    /// [`StorageError::InvalidConfig`] for bad retry settings.
    pub async fn connect(url: &str, config: &S3Config) -> Result<Self> {
        config.retry.validate()?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(StorageError::InvalidLocation {
                text: spec::quote(url),
                reason:
                    "a queue is named by its URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)"
                        .into(),
            });
        }
        let sdk = crate::aws::sdk_config(config).await;
        Ok(Queue {
            client: Client::new(&sdk),
            url: url.to_owned(),
            retry: config.retry,
        })
    }

    /// Creates the queue `name` with `options` (or finds it, when it
    /// exists with the same settings) on the server `config` reaches, and
    /// connects to it: for self-hosted engines, tests and set-up scripts.
    ///
    /// # Errors
    /// A failed request or an out-of-range option.
    pub async fn create(name: &str, options: &QueueOptions, config: &S3Config) -> Result<Self> {
        config.retry.validate()?;
        let sdk = crate::aws::sdk_config(config).await;
        let client = Client::new(&sdk);
        let mut attributes = HashMap::new();
        attributes.insert(
            QueueAttributeName::VisibilityTimeout,
            seconds(
                "visibility_timeout",
                options.visibility_timeout,
                MAX_VISIBILITY,
            )?
            .to_string(),
        );
        if let Some((dlq, max_receives)) = &options.dead_letter {
            let arn = Self::connect(dlq, config).await?.arn().await?;
            attributes.insert(
                QueueAttributeName::RedrivePolicy,
                redrive_policy(&arn, *max_receives),
            );
        }
        let location = format!("queue `{name}`");
        let out = retry_loop(&config.retry, "CreateQueue", &location, &mut || async {
            client
                .create_queue()
                .queue_name(name)
                .set_attributes(Some(attributes.clone()))
                .send()
                .await
                .map_err(|e| classify("CreateQueue", &location, &e))
        })
        .await?;
        let url = out.queue_url().unwrap_or_default().to_owned();
        Ok(Queue {
            client,
            url,
            retry: config.retry,
        })
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The queue's ARN (for redrive policies).
    ///
    /// # Errors
    /// A failed request.
    pub async fn arn(&self) -> Result<String> {
        let attrs = self.attributes(&[QueueAttributeName::QueueArn]).await?;
        attrs
            .get(&QueueAttributeName::QueueArn)
            .cloned()
            .ok_or_else(|| StorageError::S3 {
                op: "GetQueueAttributes",
                location: self.url.clone(),
                message: "the queue has no ARN".into(),
            })
    }

    /// The receives after which the queue's redrive policy moves a message
    /// to its dead-letter queue (`None`: the queue has none).
    ///
    /// # Errors
    /// A failed request, or a redrive policy that does not parse.
    pub async fn max_receives(&self) -> Result<Option<u32>> {
        Ok(self.redrive().await?.map(|r| r.max_receives))
    }

    /// The queue's redrive policy (`None`: it has none).
    ///
    /// # Errors
    /// A failed request, or a redrive policy that does not parse.
    pub async fn redrive(&self) -> Result<Option<Redrive>> {
        let attrs = self
            .attributes(&[QueueAttributeName::RedrivePolicy])
            .await?;
        let Some(policy) = attrs.get(&QueueAttributeName::RedrivePolicy) else {
            return Ok(None);
        };
        let bad = |reason: &str| StorageError::S3 {
            op: "GetQueueAttributes",
            location: self.url.clone(),
            message: format!("redrive policy `{}`: {reason}", spec::quote(policy)),
        };
        let value: serde_json::Value =
            serde_json::from_str(policy).map_err(|e| bad(&e.to_string()))?;
        // SQS writes the count as a number; some engines as a string.
        let max_receives = match &value["maxReceiveCount"] {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| bad("no maxReceiveCount"))?;
        let dead_letter_arn = value["deadLetterTargetArn"]
            .as_str()
            .ok_or_else(|| bad("no deadLetterTargetArn"))?
            .to_owned();
        Ok(Some(Redrive {
            max_receives,
            dead_letter_arn,
        }))
    }

    /// The queue a redrive policy moves messages to, by its ARN
    /// (`arn:aws:sqs:REGION:ACCOUNT:NAME`), on the same server and with
    /// the same credentials as this one.
    ///
    /// # Errors
    /// An ARN that is not an SQS queue's, or a failed request (an unknown
    /// queue included).
    pub async fn dead_letter(&self, redrive: &Redrive) -> Result<Queue> {
        let arn = &redrive.dead_letter_arn;
        let parts: Vec<&str> = arn.split(':').collect();
        let [_, _, "sqs", _, account, name] = parts.as_slice() else {
            return Err(StorageError::S3 {
                op: "GetQueueUrl",
                location: self.url.clone(),
                message: format!(
                    "dead-letter target `{}` is not an SQS queue's ARN",
                    spec::quote(arn)
                ),
            });
        };
        let out = retry_loop(&self.retry, "GetQueueUrl", arn, &mut || async {
            self.client
                .get_queue_url()
                .queue_name(*name)
                .set_queue_owner_aws_account_id((!account.is_empty()).then(|| account.to_string()))
                .send()
                .await
                .map_err(|e| classify("GetQueueUrl", arn, &e))
        })
        .await?;
        Ok(Queue {
            client: self.client.clone(),
            url: out.queue_url().unwrap_or_default().to_owned(),
            retry: self.retry,
        })
    }

    /// The queue's attributes `names` (those it has).
    async fn attributes(
        &self,
        names: &[QueueAttributeName],
    ) -> Result<HashMap<QueueAttributeName, String>> {
        let out = retry_loop(
            &self.retry,
            "GetQueueAttributes",
            &self.url,
            &mut || async {
                self.client
                    .get_queue_attributes()
                    .queue_url(&self.url)
                    .set_attribute_names(Some(names.to_vec()))
                    .send()
                    .await
                    .map_err(|e| classify("GetQueueAttributes", &self.url, &e))
            },
        )
        .await?;
        Ok(out.attributes().cloned().unwrap_or_default())
    }

    /// Sends one message; returns its id.
    ///
    /// # Errors
    /// [`StorageError::InvalidConfig`] for a body over
    /// [`MAX_MESSAGE_BYTES`] (store it and send its key), or a failed
    /// request.
    pub async fn send(&self, body: &str) -> Result<String> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(StorageError::InvalidConfig {
                field: "message body",
                value: format!("{} bytes", body.len()),
                reason: format!(
                    "at most {MAX_MESSAGE_BYTES} bytes: store larger payloads and send their key"
                ),
            });
        }
        let out = retry_loop(&self.retry, "SendMessage", &self.url, &mut || async {
            self.client
                .send_message()
                .queue_url(&self.url)
                .message_body(body)
                .send()
                .await
                .map_err(|e| classify("SendMessage", &self.url, &e))
        })
        .await?;
        Ok(out.message_id().unwrap_or_default().to_owned())
    }

    /// Receives up to `max` (1-[`MAX_RECEIVE`]) messages, waiting up to
    /// `wait` (at most [`MAX_WAIT`]) for the first, each hidden from other
    /// receivers for `visibility`.
    ///
    /// # Errors
    /// An out-of-range argument or a failed request.
    pub async fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Message>> {
        if !(1..=MAX_RECEIVE).contains(&max) {
            return Err(StorageError::InvalidConfig {
                field: "max messages",
                value: max.to_string(),
                reason: format!("1 to {MAX_RECEIVE}"),
            });
        }
        let wait = seconds("wait", wait, MAX_WAIT)?;
        let visibility = seconds("visibility", visibility, MAX_VISIBILITY)?;
        let out = retry_loop(&self.retry, "ReceiveMessage", &self.url, &mut || async {
            self.client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(i32::try_from(max).unwrap_or(1))
                .wait_time_seconds(wait)
                .visibility_timeout(visibility)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .map_err(|e| classify("ReceiveMessage", &self.url, &e))
        })
        .await?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let attrs = m.attributes();
                let number = |k: MessageSystemAttributeName| -> Option<u64> {
                    attrs.and_then(|a| a.get(&k)).and_then(|v| v.parse().ok())
                };
                Some(Message {
                    id: m.message_id()?.to_owned(),
                    receipt: Receipt(m.receipt_handle()?.to_owned()),
                    body: m.body().unwrap_or_default().to_owned(),
                    receive_count: number(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(1),
                    first_received_ms: number(
                        MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
                    ),
                    sent_ms: number(MessageSystemAttributeName::SentTimestamp),
                })
            })
            .collect())
    }

    /// Keeps a received message hidden for `visibility` from now (a lease
    /// extension: call it well before the current one runs out).
    ///
    /// # Errors
    /// A failed request (for a receipt whose lease already ran out, the
    /// message may be someone else's now).
    pub async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<()> {
        let secs = seconds("visibility", visibility, MAX_VISIBILITY)?;
        retry_loop(
            &self.retry,
            "ChangeMessageVisibility",
            &self.url,
            &mut || async {
                self.client
                    .change_message_visibility()
                    .queue_url(&self.url)
                    .receipt_handle(&receipt.0)
                    .visibility_timeout(secs)
                    .send()
                    .await
                    .map_err(|e| classify("ChangeMessageVisibility", &self.url, &e))
            },
        )
        .await
        .map(|_| ())
    }

    /// Gives a received message back at once (visibility 0): another
    /// receiver may take it now.
    ///
    /// # Errors
    /// A failed request.
    pub async fn release(&self, receipt: &Receipt) -> Result<()> {
        self.extend(receipt, Duration::ZERO).await
    }

    /// Deletes a received message: its work is done.
    ///
    /// # Errors
    /// A failed request.
    pub async fn delete(&self, receipt: &Receipt) -> Result<()> {
        retry_loop(&self.retry, "DeleteMessage", &self.url, &mut || async {
            self.client
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(&receipt.0)
                .send()
                .await
                .map_err(|e| classify("DeleteMessage", &self.url, &e))
        })
        .await
        .map(|_| ())
    }

    /// How many messages wait and how many are held (approximately).
    ///
    /// # Errors
    /// A failed request.
    pub async fn depth(&self) -> Result<QueueDepth> {
        let attrs = self
            .attributes(&[
                QueueAttributeName::ApproximateNumberOfMessages,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            ])
            .await?;
        let get = |k: QueueAttributeName| {
            attrs
                .get(&k)
                .and_then(|v| v.parse().ok())
                .unwrap_or_default()
        };
        Ok(QueueDepth {
            waiting: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}

/// SQS's redrive policy: after `max_receives` receives without a delete, a
/// message moves to the queue `arn`.
fn redrive_policy(arn: &str, max_receives: u32) -> String {
    serde_json::json!({
        "deadLetterTargetArn": arn,
        "maxReceiveCount": max_receives.to_string(),
    })
    .to_string()
}
