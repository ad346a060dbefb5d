//! ion-lb
