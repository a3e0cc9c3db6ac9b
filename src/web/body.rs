//! A response body made of shared buffers (a segment's header and its samples' slices),
//! sent as they are, with an exact length so the response carries Content-Length.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::httpflv::{Next, ViewerGuard};

pub struct Chunks {
    left: VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    pub fn new(data: Vec<Bytes>, len: usize) -> Self {
        Self {
            left: data.into(),
            remaining: len as u64,
        }
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        while let Some(b) = self.left.pop_front() {
            if !b.is_empty() {
                self.remaining = self.remaining.saturating_sub(b.len() as u64);
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.left.iter().all(|b| b.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// An HTTP-FLV viewer's response: whatever its queue holds, as it comes, until the
/// publisher leaves or the viewer is kicked (chunked, no length).
pub struct FlvBody {
    pub guard: ViewerGuard,
}

impl Body for FlvBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.guard.viewer.next(cx.waker()) {
            Next::Data(b) => {
                metrics::counter!("rtmp_http_bytes_out_total", "kind" => "flv")
                    .increment(b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Next::Wait => Poll::Pending,
            Next::End => Poll::Ready(None),
        }
    }
}
