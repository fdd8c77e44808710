//! The budgets of webhook body bytes in flight: what keeps anonymous clients from holding the
//! gateway's memory, or each other's deliveries, hostage.
//!
//! - A reservation grows with the bytes that actually arrive (in 64 KiB steps), never with a
//!   declared or maximum size: a client that declares 14 MB and sends nothing holds nothing.
//! - Deliveries routed by an integration in their URL and app-level deliveries (routed by an
//!   account inside the payload: Slack, the GitHub App) draw from budgets of their own
//!   (`WEBHOOK_BYTES_IN_FLIGHT`, `WEBHOOK_APP_BYTES_IN_FLIGHT`), so anonymous posts to the
//!   app-level URLs can never starve a per-integration delivery.
//! - One client address holds at most `WEBHOOK_BYTES_PER_CLIENT` of them at once.
//!
//! Invariant: a reservation is a value ([`Reservation`]) that gives its bytes back when it is
//! dropped, on every path (answer, error, a client gone mid-body).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservations grow by at least this much at a time (fewer semaphore operations).
const STEP_KIB: u32 = 64;

/// Which budget a delivery draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// The URL names the integration (`/webhook/{integration_id}`, `?integration_id=`).
    PerIntegration,
    /// Routed by an account inside the payload (Slack, the GitHub App): anyone may post.
    AppLevel,
}

/// Why a reservation could not grow: the answer is 503 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

/// The budgets of one gateway.
#[derive(Debug)]
pub struct WebhookBudget {
    per_integration: Arc<Semaphore>,
    app_level: Arc<Semaphore>,
    per_integration_kib: u32,
    app_level_kib: u32,
    clients: Arc<ClientShares>,
}

#[derive(Debug)]
struct ClientShares {
    cap_kib: u32,
    held: Mutex<HashMap<IpAddr, u32>>,
}

impl ClientShares {
    fn take(&self, client: IpAddr, kib: u32) -> Result<(), Exhausted> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = held.entry(client).or_insert(0);
        match entry.checked_add(kib) {
            Some(total) if total <= self.cap_kib => {
                *entry = total;
                Ok(())
            }
            _ => {
                if *entry == 0 {
                    held.remove(&client);
                }
                Err(Exhausted)
            }
        }
    }

    fn give_back(&self, client: IpAddr, kib: u32) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = held.get_mut(&client) {
            *entry = entry.saturating_sub(kib);
            if *entry == 0 {
                held.remove(&client);
            }
        }
    }
}

impl WebhookBudget {
    /// Budgets of `per_integration`, `app_level` bytes, and at most `per_client` bytes held by
    /// one client address.
    pub fn new(per_integration: usize, app_level: usize, per_client: usize) -> Self {
        let per_integration_kib = kib(per_integration);
        let app_level_kib = kib(app_level);
        Self {
            per_integration: Arc::new(Semaphore::new(per_integration_kib as usize)),
            app_level: Arc::new(Semaphore::new(app_level_kib as usize)),
            per_integration_kib,
            app_level_kib,
            clients: Arc::new(ClientShares {
                cap_kib: kib(per_client),
                held: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// An empty reservation of `client` in `pool`; it grows with [`Reservation::cover`].
    pub fn reserve(&self, pool: Pool, client: IpAddr) -> Reservation {
        let semaphore = match pool {
            Pool::PerIntegration => &self.per_integration,
            Pool::AppLevel => &self.app_level,
        };
        Reservation {
            semaphore: semaphore.clone(),
            clients: self.clients.clone(),
            client,
            permit: None,
            held_kib: 0,
        }
    }

    /// Bytes reserved now and the limit, of `pool` (the metrics' gauges).
    pub fn usage(&self, pool: Pool) -> (usize, usize) {
        let (semaphore, limit) = match pool {
            Pool::PerIntegration => (&self.per_integration, self.per_integration_kib),
            Pool::AppLevel => (&self.app_level, self.app_level_kib),
        };
        let limit = limit as usize;
        let reserved = limit.saturating_sub(semaphore.available_permits());
        (reserved * 1024, limit * 1024)
    }

    /// Client addresses holding a share now (tests, metrics).
    pub fn clients_holding(&self) -> usize {
        self.clients
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Bytes of one delivery's body held in a budget; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    semaphore: Arc<Semaphore>,
    clients: Arc<ClientShares>,
    client: IpAddr,
    permit: Option<OwnedSemaphorePermit>,
    held_kib: u32,
}

impl Reservation {
    /// Makes the reservation cover `bytes` (the body read so far plus the frame that just
    /// arrived), growing by at least 64 KiB at a time; never shrinks.
    pub fn cover(&mut self, bytes: usize) -> Result<(), Exhausted> {
        let needed = kib(bytes);
        if needed <= self.held_kib {
            return Ok(());
        }
        let grow = (needed - self.held_kib).max(STEP_KIB);
        self.clients.take(self.client, grow)?;
        match self.semaphore.clone().try_acquire_many_owned(grow) {
            Ok(permit) => {
                match &mut self.permit {
                    Some(held) => held.merge(permit),
                    None => self.permit = Some(permit),
                }
                self.held_kib += grow;
                Ok(())
            }
            Err(_) => {
                self.clients.give_back(self.client, grow);
                Err(Exhausted)
            }
        }
    }

    /// Bytes held now (in whole KiB).
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.held_kib as usize * 1024
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held_kib > 0 {
            self.clients.give_back(self.client, self.held_kib);
        }
        // The permit returns its KiB to the semaphore as it drops.
    }
}

/// `bytes` in KiB (rounded up, at least 1).
pub(crate) fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    const MIB: usize = 1024 * 1024;

    #[test]
    fn a_reservation_holds_only_what_arrived_and_gives_it_back() {
        let budget = WebhookBudget::new(4 * MIB, MIB, 4 * MIB);
        let mut reservation = budget.reserve(Pool::PerIntegration, A);
        assert_eq!(
            budget.usage(Pool::PerIntegration).0,
            0,
            "nothing before bytes"
        );
        reservation.cover(10).unwrap();
        assert_eq!(reservation.held_bytes(), 64 * 1024, "one step");
        reservation.cover(100 * 1024).unwrap();
        assert_eq!(budget.usage(Pool::PerIntegration).0, 128 * 1024);
        assert_eq!(
            budget.usage(Pool::AppLevel).0,
            0,
            "the other pool untouched"
        );
        drop(reservation);
        assert_eq!(budget.usage(Pool::PerIntegration).0, 0);
        assert_eq!(budget.clients_holding(), 0);
    }

    #[test]
    fn pools_are_apart_and_a_client_holds_a_bounded_share() {
        let budget = WebhookBudget::new(4 * MIB, MIB, 2 * MIB);
        let mut app = budget.reserve(Pool::AppLevel, A);
        app.cover(MIB).unwrap();
        let mut more_app = budget.reserve(Pool::AppLevel, B);
        assert_eq!(more_app.cover(1), Err(Exhausted), "app-level pool full");
        // ...while a per-integration delivery still gets its bytes.
        let mut delivery = budget.reserve(Pool::PerIntegration, B);
        delivery.cover(2 * MIB).unwrap();
        // Client A already holds 1 MiB: its share stops it at 2 MiB.
        let mut second = budget.reserve(Pool::PerIntegration, A);
        second.cover(MIB).unwrap();
        assert_eq!(second.cover(MIB + 1), Err(Exhausted));
        assert_eq!(second.held_bytes(), MIB, "a refused growth takes nothing");
        drop((app, more_app, delivery, second));
        assert_eq!(budget.usage(Pool::PerIntegration).0, 0);
        assert_eq!(budget.usage(Pool::AppLevel).0, 0);
        assert_eq!(budget.clients_holding(), 0);
    }
}
