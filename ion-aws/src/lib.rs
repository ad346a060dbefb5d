//! ion-aws
