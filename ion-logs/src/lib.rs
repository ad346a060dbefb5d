//! ion-logs
