//! The metrics the data plane records: their help texts, and every counter whose label
//! values are known up front registered at 0, so dashboards and `rate()` alerts work
//! before the first event (Prometheus' instrumentation advice). The label values come
//! from the modules that record them.

use crate::auth::{Action, DenyReason, CALLBACK_RESULTS};
use crate::protocol::session::SessionError;
use crate::record::ERROR_REASONS as RECORD_ERRORS;
use crate::shard::conn::{BUFFER_BUDGET_SERVER, REJECT_REASONS, TIMEOUT_KINDS, TLS_RECORD_ERROR};

/// Help text for every metric the data plane records (scrapers and promtool want it).
pub(super) fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "rtmp_connections_accepted_total",
        "TCP connections accepted."
    );
    describe_counter!("rtmp_publishes_total", "Publishes accepted.");
    describe_counter!(
        "rtmp_publish_rejects_total",
        "Publishes refused, by reason."
    );
    describe_counter!(
        "rtmp_publishers_replaced_total",
        "Publishers silent for 2 s replaced by a new publish of their stream."
    );
    describe_counter!("rtmp_plays_total", "Plays started.");
    describe_counter!(
        "rtmp_protocol_errors_total",
        "Connections closed for bad input, by kind."
    );
    describe_counter!(
        "rtmp_timeouts_total",
        "Connections closed by a timeout, by kind."
    );
    describe_counter!(
        "rtmp_viewer_drops_total",
        "Frames not sent to a lagging viewer, by reason."
    );
    describe_counter!(
        "rtmp_viewer_disconnects_total",
        "Viewers disconnected for lagging, by reason."
    );
    describe_counter!(
        "rtmp_cross_shard_drops_total",
        "Frames dropped between shards."
    );
    describe_counter!(
        "rtmp_record_errors_total",
        "Recordings stopped by an I/O error."
    );
    describe_counter!(
        "rtmp_record_dropped_frames_total",
        "Frames a recording could not queue."
    );
    describe_counter!("rtmp_play_rejects_total", "Plays refused, by reason.");
    describe_counter!(
        "rtmp_hls_parts_total",
        "LL-HLS parts (CMAF fragments) packaged."
    );
    describe_counter!("rtmp_hls_segments_total", "HLS segments started.");
    describe_counter!(
        "rtmp_hls_blocking_waits_total",
        "HLS requests (blocking reloads, hinted parts) answered after waiting."
    );
    describe_gauge!("rtmp_httpflv_viewers", "HTTP-FLV viewers connected.");
    describe_counter!(
        "rtmp_storage_uploads_total",
        "Storage jobs finished, by target and result (ok, retry, denied, refused, dropped, replaced)."
    );
    describe_counter!("rtmp_storage_bytes_total", "Bytes stored, by target.");
    describe_gauge!(
        "rtmp_storage_queue_depth",
        "Storage jobs waiting for the uploader."
    );
    describe_gauge!(
        "rtmp_storage_oldest_pending_seconds",
        "Age of the oldest storage job waiting."
    );
    describe_counter!(
        "rtmp_httpflv_dropped_frames_total",
        "Frames not sent to a lagging HTTP-FLV viewer, by reason."
    );
    describe_counter!(
        "rtmp_httpflv_kicked_total",
        "HTTP-FLV viewers disconnected for lagging."
    );
    describe_counter!(
        "rtmp_auth_denied_total",
        "Publishes and plays refused by authorization, by action and reason."
    );
    describe_counter!(
        "rtmp_auth_callback_requests_total",
        "Authorization callback decisions, by action and result."
    );
    describe_counter!(
        "rtmp_ingress_bytes_total",
        "Bytes read from client sockets (publishers, players), per shard."
    );
    describe_counter!(
        "rtmp_egress_bytes_total",
        "Bytes written to client sockets (media to players, replies), per shard."
    );
    describe_counter!(
        "rtmp_ingest_messages_total",
        "Messages ingested from publishers, per shard and kind."
    );
    describe_counter!(
        "rtmp_relayed_messages_total",
        "Frames queued to players, per shard."
    );
    describe_counter!(
        "rtmp_push_bytes_total",
        "Media payload bytes sent to a push destination."
    );
    describe_counter!(
        "rtmp_push_reconnects_total",
        "Push sessions that failed and reconnect, per destination."
    );
    describe_counter!(
        "rtmp_push_dropped_frames_total",
        "Frames a push destination could not queue (too far behind)."
    );
    describe_gauge!(
        "rtmp_connections",
        "Open connections, per shard and role (handshake, publisher, player)."
    );
    describe_gauge!(
        "rtmp_shard_utilization_ratio",
        "Share of the last second a shard thread was busy on CPU (1 = saturated)."
    );
    describe_gauge!("rtmp_viewers", "Players connected, per shard.");
    describe_counter!(
        "rtmp_connections_refused_total",
        "Connections closed at accept by --max-conns, --max-conns-per-ip or --max-handshakes-per-ip."
    );
    describe_gauge!(
        "rtmp_tls_connections",
        "Open RTMPS connections past their TLS handshake, per shard (also counted in rtmp_connections)."
    );
    describe_counter!(
        "rtmp_tls_handshakes_total",
        "Finished RTMPS handshakes, by TLS version and cipher suite."
    );
    describe_counter!(
        "rtmp_tls_handshake_failures_total",
        "RTMPS handshakes that failed, by reason (not_tls: plain RTMP or garbage on the TLS port)."
    );
    describe_gauge!("rtmp_streams", "Streams with a publisher, per owner shard.");
    describe_counter!(
        "rtmp_channel_switches_total",
        "Channel switches, by channel and reason (ended, stalled, returned, forced)."
    );
    describe_counter!(
        "rtmp_channel_slate_seconds_total",
        "Seconds a channel spent on its slate."
    );
    describe_gauge!(
        "rtmp_channel_on_slate",
        "1 while a channel plays its slate, else 0."
    );
    describe_gauge!(
        "rtmp_channel_sources_delivering",
        "A channel's sources delivering media within the source timeout."
    );
    describe_counter!(
        "rtmp_channel_input_drops_total",
        "Source frames a channel could not queue (its task too far behind)."
    );
    zero_known_series();
}

/// Counters with known label values, at 0 until their first event.
fn zero_known_series() {
    for kind in SessionError::KINDS
        .into_iter()
        .chain([TLS_RECORD_ERROR, BUFFER_BUDGET_SERVER])
    {
        metrics::counter!("rtmp_protocol_errors_total", "kind" => kind).increment(0);
    }
    for kind in TIMEOUT_KINDS {
        metrics::counter!("rtmp_timeouts_total", "kind" => kind).increment(0);
    }
    for reason in REJECT_REASONS {
        metrics::counter!("rtmp_publish_rejects_total", "reason" => reason).increment(0);
        metrics::counter!("rtmp_play_rejects_total", "reason" => reason).increment(0);
    }
    for action in [Action::Publish, Action::Play] {
        for reason in DenyReason::ALL {
            metrics::counter!("rtmp_auth_denied_total", "action" => action.label(), "reason" => reason.label())
                .increment(0);
        }
        for result in CALLBACK_RESULTS {
            metrics::counter!("rtmp_auth_callback_requests_total", "action" => action.label(), "result" => result)
                .increment(0);
        }
    }
    for reason in crate::shard::conn::REFUSE_REASONS {
        metrics::counter!("rtmp_connections_refused_total", "reason" => reason).increment(0);
    }
    for reason in crate::tls::FAILURE_REASONS {
        metrics::counter!("rtmp_tls_handshake_failures_total", "reason" => reason).increment(0);
    }
    for reason in crate::fanout::admission::DropReason::ALL {
        metrics::counter!("rtmp_httpflv_dropped_frames_total", "reason" => reason.label())
            .increment(0);
    }
    for reason in RECORD_ERRORS {
        metrics::counter!("rtmp_record_errors_total", "reason" => reason).increment(0);
    }
    for name in [
        "rtmp_connections_accepted_total",
        "rtmp_publishes_total",
        "rtmp_publishers_replaced_total",
        "rtmp_plays_total",
        "rtmp_record_dropped_frames_total",
        "rtmp_hls_parts_total",
        "rtmp_hls_segments_total",
        "rtmp_hls_blocking_waits_total",
        "rtmp_httpflv_kicked_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}
