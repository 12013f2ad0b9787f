"""app.services.speakers: helpers flush and leave the transaction to the caller, even when they fail."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select

from app import errors
from app.security import create_api_key
from app.services.speakers import create_speaker
from storage.models import Speaker


def test_a_concurrent_duplicate_is_speaker_exists_and_the_caller_ends_the_transaction(services):
    with services.session_factory() as db:
        tenant, _ = create_api_key(db, "acme")
        db.commit()
        tenant_id = tenant.id

    def concurrent_request(*_args) -> None:  # another request wins the race between the check and the flush
        with services.session_factory() as other:
            other.add(Speaker(tenant_id=tenant_id, external_id="alice"))
            other.commit()

    with services.session_factory() as db:
        event.listen(db, "before_flush", concurrent_request, once=True)
        with pytest.raises(errors.SpeakerExists):
            create_speaker(db, services.settings, tenant_id, "alice", None)
        assert db.in_transaction()  # not rolled back behind the caller's back
        db.rollback()  # the caller's (the request boundary's) job
        assert db.scalar(select(func.count()).select_from(Speaker).where(Speaker.external_id == "alice")) == 1
