//! The real-time branch: event model, local stream, window engine, alerts.
