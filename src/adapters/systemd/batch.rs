//! Several D-Bus calls in one round trip: every call sent at once, then
//! the replies read as they come, matched to their calls by serial. zbus's
//! blocking calls wait for each reply before the next call goes out, and
//! on a user's bus each wait costs a few thread hand-offs; reading the
//! state of N units is one round trip this way, not N.
//!
//! This runs inside a bus helper only: a peer that never answers holds the
//! helper until the root side kills it at its deadline.

use std::collections::HashMap;

use anyhow::{bail, Context};
use serde::Serialize;
use zbus::blocking::{Connection, MessageIterator};
use zbus::message::Type as MessageType;
use zbus::zvariant::{DynamicType, OwnedValue};
use zbus::Message;

use super::{MANAGER_INTERFACE, MANAGER_PATH, SYSTEMD_NAME};

const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const DBUS_NAME: &str = "org.freedesktop.DBus";
const DBUS_PATH: &str = "/org/freedesktop/DBus";

/// Calls to send together.
#[derive(Default)]
pub(super) struct Batch {
    calls: Vec<Message>,
}

/// Where a call's reply is in [`Replies`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot(usize);

impl Batch {
    /// `interface.member(body)` on `path` of `destination`.
    pub(super) fn call<B: Serialize + DynamicType>(
        &mut self,
        destination: &str,
        path: &str,
        interface: &str,
        member: &str,
        body: &B,
    ) -> anyhow::Result<Slot> {
        let message = Message::method_call(path, member)?
            .destination(destination)?
            .interface(interface)?
            .build(body)
            .with_context(|| format!("cannot build the call {interface}.{member}"))?;
        self.calls.push(message);
        Ok(Slot(self.calls.len() - 1))
    }

    /// A call to the systemd manager.
    pub(super) fn manager<B: Serialize + DynamicType>(
        &mut self,
        member: &str,
        body: &B,
    ) -> anyhow::Result<Slot> {
        self.call(SYSTEMD_NAME, MANAGER_PATH, MANAGER_INTERFACE, member, body)
    }

    /// `Properties.Get(interface, property)` of a systemd object.
    pub(super) fn get(
        &mut self,
        path: &str,
        interface: &str,
        property: &str,
    ) -> anyhow::Result<Slot> {
        self.call(
            SYSTEMD_NAME,
            path,
            PROPERTIES,
            "Get",
            &(interface, property),
        )
    }

    /// A call to the bus itself (`AddMatch`, `GetNameOwner`).
    pub(super) fn bus<B: Serialize + DynamicType>(
        &mut self,
        member: &str,
        body: &B,
    ) -> anyhow::Result<Slot> {
        self.call(DBUS_NAME, DBUS_PATH, DBUS_NAME, member, body)
    }

    /// Sends every call, then reads until each has its reply (a method
    /// return or an error).
    pub(super) fn send(self, conn: &Connection) -> anyhow::Result<Replies> {
        // The stream exists before the first call: no reply slips past.
        let mut incoming = MessageIterator::from(conn);
        let mut waiting: HashMap<u32, usize> = HashMap::with_capacity(self.calls.len());
        for (i, call) in self.calls.iter().enumerate() {
            waiting.insert(call.primary_header().serial_num().get(), i);
            conn.send(call)
                .context("cannot send a call to the user's bus")?;
        }
        let mut replies: Vec<Option<zbus::Result<Message>>> = std::iter::repeat_with(|| None)
            .take(self.calls.len())
            .collect();
        while !waiting.is_empty() {
            let message = match incoming.next() {
                Some(message) => message.context("reading the user's bus")?,
                None => bail!("the user's bus closed the connection"),
            };
            let reply = match message.message_type() {
                MessageType::MethodReturn => true,
                MessageType::Error => false,
                _ => continue,
            };
            let Some(serial) = message.header().reply_serial() else {
                continue;
            };
            let Some(i) = waiting.remove(&serial.get()) else {
                continue;
            };
            replies[i] = Some(if reply {
                Ok(message)
            } else {
                Err(zbus::Error::from(message))
            });
        }
        Ok(Replies(replies))
    }
}

/// The replies of a [`Batch`], each taken once.
pub(super) struct Replies(Vec<Option<zbus::Result<Message>>>);

impl Replies {
    /// The reply to the call in `slot`.
    pub(super) fn take(&mut self, slot: Slot) -> zbus::Result<Message> {
        self.0
            .get_mut(slot.0)
            .and_then(Option::take)
            .unwrap_or(Err(zbus::Error::InvalidReply))
    }

    /// The value a `Properties.Get` in `slot` read.
    pub(super) fn value<T>(&mut self, slot: Slot) -> zbus::Result<T>
    where
        T: TryFrom<OwnedValue>,
        T::Error: Into<zbus::Error>,
    {
        let value: OwnedValue = self.take(slot)?.body().deserialize()?;
        T::try_from(value).map_err(Into::into)
    }
}
