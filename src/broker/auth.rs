//! The auth half of the broker core: the in-band `auth` command (first token or refresh),
//! the grant check on subscribe and publish (never on delivery), and closing connections whose
//! token expired (called from the shard's coarse sweep). Decisions come from
//! [`crate::auth::Policy`]; this file only applies them to connections.

use serde_json::value::RawValue;

use crate::auth::Access;
use crate::engine::Engine;
use crate::metrics::Metric;
use crate::proto::command::{Command, ErrorCode};
use crate::proto::envelope;

use super::{Broker, CloseReason, ConnId, Outputs, SendKind};

/// What a command wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Subscribe,
    Publish,
}

impl<E: Engine> Broker<E> {
    /// A connection presented a token at the upgrade: keep its compiled grants.
    pub fn authenticated(&mut self, conn: ConnId, grants: Box<crate::auth::Grants>) {
        self.conns.set_grants(conn, Some(grants));
    }

    /// Whether `command` may go ahead; if not, the client has been told why.
    pub(super) fn permitted<O: Outputs>(
        &mut self,
        conn: ConnId,
        command: &Command<'_>,
        out: &mut O,
    ) -> bool {
        match command {
            Command::Subscribe { topic, id, .. } => {
                self.may(conn, topic, Action::Subscribe, *id, out)
            }
            Command::Publish { topic, id, .. } => {
                self.within_publish_rate(conn, *id, out)
                    && self.may(conn, topic, Action::Publish, *id, out)
            }
            Command::Unsubscribe { .. } | Command::Auth { .. } => true,
        }
    }

    /// `--max-publish-rate`: takes a token from the connection's bucket, or answers
    /// `rate_limited` (the publish is dropped; the connection stays open). Checked before the
    /// grant, so a flood of refused publishes is bounded too.
    pub(super) fn within_publish_rate<O: Outputs>(
        &mut self,
        conn: ConnId,
        id: Option<&RawValue>,
        out: &mut O,
    ) -> bool {
        let Some(limit) = self.policy.publish_rate() else {
            return true;
        };
        if self.conns.take_publish_token(conn, limit, self.now_ms) {
            return true;
        }
        out.count(Metric::PublishRateLimited, 1);
        let message = "over --max-publish-rate; slow down";
        let frame = envelope::error_frame(id, ErrorCode::RateLimited, message);
        let _ = out.send(conn, frame, SendKind::Reply);
        false
    }

    /// The grant check: one policy decision per subscribe or publish.
    pub(super) fn may<O: Outputs>(
        &mut self,
        conn: ConnId,
        topic: &str,
        action: Action,
        id: Option<&RawValue>,
        out: &mut O,
    ) -> bool {
        if !self.policy.tokens_required() {
            return true;
        }
        let grants = self.conns.grants(conn);
        let access = match action {
            Action::Subscribe => self.policy.may_subscribe(grants, topic, self.now_unix_secs),
            Action::Publish => self.policy.may_publish(grants, topic, self.now_unix_secs),
        };
        let (code, metric, message) = match access {
            Access::Allowed => return true,
            Access::Unauthorized => (
                ErrorCode::Unauthorized,
                Metric::AuthUnauthorized,
                "a token is needed for this topic (send {\"op\":\"auth\",\"token\":...})",
            ),
            Access::Forbidden => (
                ErrorCode::Forbidden,
                Metric::AuthForbidden,
                "the token does not grant this topic",
            ),
        };
        out.count(metric, 1);
        let _ = out.send(
            conn,
            envelope::error_frame(id, code, message),
            SendKind::Reply,
        );
        false
    }

    /// `{"op":"auth","token":...}`: verify, compile the grants, and replace the old ones. A
    /// refused refresh keeps the previous token (it stays valid until its own expiry).
    pub(super) fn auth<O: Outputs>(
        &mut self,
        conn: ConnId,
        token: &[u8],
        id: Option<&RawValue>,
        out: &mut O,
    ) {
        if !self.policy.tokens_required() {
            // Nothing to check: everything is allowed already.
            if let Some(id) = id {
                let _ = out.send(conn, envelope::ack_frame(id, None), SendKind::Reply);
            }
            return;
        }
        match self.policy.authenticate(token, self.now_unix_secs) {
            Ok(grants) => {
                out.count(Metric::AuthTokensAccepted, 1);
                self.conns.set_grants(conn, Some(Box::new(grants)));
                if let Some(id) = id {
                    let _ = out.send(conn, envelope::ack_frame(id, None), SendKind::Reply);
                }
            }
            Err(error) => {
                out.count(Metric::AuthTokensRefused, 1);
                let frame = envelope::error_frame(id, ErrorCode::Unauthorized, error.reason());
                let _ = out.send(conn, frame, SendKind::Reply);
            }
        }
    }

    /// Closes every connection whose token expired without a refresh: a `token_expired`
    /// error, then close 4001. One walk over this shard's connections, from the coarse sweep.
    pub fn expire_tokens<O: Outputs>(&mut self, out: &mut O) {
        if !self.policy.tokens_required() {
            return;
        }
        let mut expired = Vec::new();
        self.conns.take_expired(self.now_unix_secs, &mut expired);
        for conn in expired {
            out.count(Metric::AuthTokenExpiredClosed, 1);
            let frame = envelope::error_frame(
                None,
                ErrorCode::TokenExpired,
                "the token expired; reconnect with a new one",
            );
            let _ = out.send(conn, frame, SendKind::Reply);
            out.close(conn, CloseReason::TokenExpired);
        }
    }
}
