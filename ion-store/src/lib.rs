//! ion-store
