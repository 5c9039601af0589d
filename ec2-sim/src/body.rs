//! The response body type of the HTTP server: a whole body, or (for the `CloseMidResponse` fault) the first part of
//! one followed by an error, which makes hyper abort the connection in the middle of the body.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// How long a broken body waits between its last bytes and the error. Hyper buffers writes and drops its buffer when
/// the body fails, so the pause (during which the body is pending) is what lets the bytes reach the socket first.
const FLUSH_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub(crate) struct SimBody {
    data: Option<Bytes>,
    ending: Ending,
}

#[derive(Debug)]
enum Ending {
    Complete,
    /// Fail after the data; the pause starts once the data has been handed over.
    Abort(Option<Pin<Box<Sleep>>>),
}

impl SimBody {
    pub(crate) fn full(data: impl Into<Bytes>) -> SimBody {
        SimBody { data: Some(data.into()), ending: Ending::Complete }
    }

    /// `data`, then an error. Its length is unknown to hyper, so a Content-Length header set on the response is
    /// sent as it is (and then not honoured).
    pub(crate) fn aborted_after(data: impl Into<Bytes>) -> SimBody {
        SimBody { data: Some(data.into()), ending: Ending::Abort(None) }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(data) = self.data.take()
            && !data.is_empty()
        {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        match &mut self.ending {
            Ending::Complete => Poll::Ready(None),
            Ending::Abort(pause) => {
                let pause = pause.get_or_insert_with(|| Box::pin(tokio::time::sleep(FLUSH_PAUSE)));
                match pause.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "fault injection: connection closed mid-response",
                    )))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.ending, Ending::Complete) && self.data.as_ref().is_none_or(Bytes::is_empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self.ending {
            Ending::Complete => SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64)),
            Ending::Abort(_) => SizeHint::default(),
        }
    }
}
