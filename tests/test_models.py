"""Order validation and the one-line messages users see, and settings from the environment."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pizza_saga.common.errors import describe_validation_error, field_path
from pizza_saga.common.settings import Settings, SettingsError
from pizza_saga.order.example import GOOD_CARD, example_order
from pizza_saga.order.menu import MENU
from pizza_saga.order.models import MAX_PIZZAS, PizzaOrder

JsonObject = dict[str, Any]
Mutation = Callable[[JsonObject], None]


def seed_json() -> JsonObject:
    """The seed order as a client would send it (a fresh, mutable copy each call)."""
    loaded: JsonObject = json.loads(example_order().model_dump_json())
    return loaded


def rejection(raw: str) -> str:
    """The one line a user reads when ``raw`` is rejected as an order."""
    with pytest.raises(ValidationError) as caught:
        PizzaOrder.model_validate_json(raw)
    return describe_validation_error(caught.value, "order")


# --- The seed order ---------------------------------------------------------------------


def test_seed_order_is_valid_and_round_trips_through_json() -> None:
    order = example_order()
    again = PizzaOrder.model_validate_json(order.model_dump_json())
    assert again == order
    assert [pizza.price for pizza in again.items] == [MENU[p.description] for p in again.items]
    assert again.credit_card_info.number == GOOD_CARD


def test_seed_order_round_trips_through_python_dict() -> None:
    order = example_order()
    assert PizzaOrder.model_validate(order.model_dump()) == order


# --- Bad orders, each with its own one-line message naming the field -------------------


def _set(*path: str | int, value: object) -> Mutation:
    """A mutation setting the value at ``path`` in the order's JSON."""

    def mutate(order: JsonObject) -> None:
        target: Any = order
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return mutate


def _delete(*path: str | int) -> Mutation:
    def mutate(order: JsonObject) -> None:
        target: Any = order
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return mutate


def _too_many_items(order: JsonObject) -> None:
    order["items"] = [order["items"][0]] * (MAX_PIZZAS + 1)


@dataclass(frozen=True)
class BadOrder:
    """A mutation of the seed order, the field it breaks, and a telling part of why."""

    mutate: Mutation
    path: str
    reason: str


BAD_ORDERS: dict[str, BadOrder] = {
    "missing email": BadOrder(_delete("customer", "email"), "customer.email", "Field required"),
    "price as string": BadOrder(
        _set("items", 0, "price", value="1500"), "items[0].price", "valid integer"
    ),
    "is_delivery as 'yes'": BadOrder(
        _set("is_delivery", value="yes"), "is_delivery", "valid boolean"
    ),
    "empty item list": BadOrder(_set("items", value=[]), "items", "at least 1 item"),
    "too many items": BadOrder(_too_many_items, "items", f"at most {MAX_PIZZAS} items"),
    "unknown pizza": BadOrder(
        _set("items", 0, "description", value="Huge, with pineapple"),
        "items[0].description",
        "'Huge, with pineapple' is not on the menu",
    ),
    "price not the menu's": BadOrder(
        _set("items", 1, "price", value=1500),
        "items[1].price",
        "1500 does not match the menu price 1200",
    ),
    "negative price": BadOrder(
        _set("items", 0, "price", value=-1), "items[0].price", "greater than or equal to 0"
    ),
    "non-integer price": BadOrder(
        _set("items", 2, "price", value=15.5), "items[2].price", "valid integer"
    ),
    "card number with letters": BadOrder(
        _set("credit_card_info", "number", value="4242-abcd"),
        "credit_card_info.number",
        "only digits",
    ),
    "card number too long": BadOrder(
        _set("credit_card_info", "number", value="4" * 20),
        "credit_card_info.number",
        "20 digits is too long",
    ),
    "oversized name": BadOrder(
        _set("customer", "name", value="x" * 10_000), "customer.name", "at most 100 characters"
    ),
    "unknown extra field": BadOrder(
        _set("coupon", value="FREE-PIZZA"), "coupon", "Extra inputs are not permitted"
    ),
    "bad order_number": BadOrder(
        _set("order_number", value="has space"), "order_number", "letters, digits, '-' or '_'"
    ),
    "bad email": BadOrder(
        _set("customer", "email", value="maria.example.com"),
        "customer.email",
        "is not an email address",
    ),
}


def _assert_one_clear_line(message: str, path: str, reason: str) -> None:
    assert message.startswith(f"order: {path}: "), message
    assert reason in message, message
    assert "\n" not in message
    assert len(message) < 300, "the message must not echo huge inputs"
    assert "more problem" not in message, "each bad input is exactly one problem"


@pytest.mark.parametrize("case", BAD_ORDERS.values(), ids=BAD_ORDERS.keys())
def test_bad_order_json_is_rejected_with_a_one_line_message_naming_the_field(
    case: BadOrder,
) -> None:
    order = seed_json()
    case.mutate(order)
    _assert_one_clear_line(rejection(json.dumps(order)), case.path, case.reason)


@pytest.mark.parametrize("case", BAD_ORDERS.values(), ids=BAD_ORDERS.keys())
def test_bad_order_dict_is_rejected_the_same_way(case: BadOrder) -> None:
    order = seed_json()
    case.mutate(order)
    with pytest.raises(ValidationError) as caught:
        PizzaOrder.model_validate(order)
    _assert_one_clear_line(describe_validation_error(caught.value, "order"), case.path, case.reason)


def test_malformed_json_is_reported_as_not_json() -> None:
    message = rejection('{"order_number": "XD001", ')
    assert message.startswith("order: not valid JSON: "), message
    assert "line 1" in message
    assert "\n" not in message


def test_several_problems_name_the_first_and_count_the_rest() -> None:
    order = seed_json()
    order["customer"]["email"] = "nope"
    order["items"][0]["price"] = -5
    order["order_number"] = "has space"
    message = rejection(json.dumps(order))
    assert message.startswith("order: order_number: "), message
    assert message.endswith("(and 2 more problems)"), message


def test_field_path_renders_list_indexes_in_brackets() -> None:
    assert field_path(("items", 0, "price")) == "items[0].price"
    assert field_path(("customer", "email")) == "customer.email"
    assert field_path(()) == ""


@pytest.mark.parametrize(
    "typed", ["4242 4242 4242 4242", "4242-4242-4242-4242", " 4242 - 4242 4242-4242 "]
)
def test_card_number_with_spaces_or_dashes_is_normalised_to_digits(typed: str) -> None:
    order = seed_json()
    order["credit_card_info"]["number"] = typed
    parsed = PizzaOrder.model_validate_json(json.dumps(order))
    assert parsed.credit_card_info.number == GOOD_CARD


def test_card_number_of_only_separators_is_rejected() -> None:
    order = seed_json()
    order["credit_card_info"]["number"] = " - - "
    message = rejection(json.dumps(order))
    assert message.startswith("order: credit_card_info.number: "), message


def test_card_number_with_non_ascii_digits_is_rejected() -> None:
    order = seed_json()
    order["credit_card_info"]["number"] = "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢"  # Arabic-Indic 4242...
    assert "only digits" in rejection(json.dumps(order))


# --- Settings from the environment ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [("abc", "valid number"), ("-1", "greater than or equal to 0"), ("nan", "")],
)
def test_bad_prep_seconds_is_a_settings_error_naming_the_variable(value: str, reason: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"PIZZA_PREP_SECONDS": value})
    assert str(caught.value).startswith("PIZZA_PREP_SECONDS: "), str(caught.value)
    assert reason in str(caught.value)


def test_empty_environment_values_are_ignored(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "PIZZA_HOME": str(tmp_path),
            "PIZZA_PREP_SECONDS": "",
            "PIZZA_DRIVER_SECONDS": "",
            "PIZZA_DATABASE_URL": "",
            "PIZZA_UI_URL": "",
        }
    )
    assert settings.prep_seconds == 3.0
    assert settings.driver_seconds == 2.0
    assert settings.database_url is None
    assert settings.ui_url is None
    assert settings.store_url == f"sqlite:///{tmp_path / 'pizza.db'}"


def test_pizza_home_is_honoured_in_store_url(tmp_path: Path) -> None:
    home = tmp_path / "elsewhere"
    settings = Settings.from_env({"PIZZA_HOME": str(home), "PIZZA_PREP_SECONDS": "0.5"})
    assert settings.home == home
    assert settings.store_url == f"sqlite:///{home / 'pizza.db'}"
    assert settings.server_db == home / "temporal.db"
    assert settings.prep_seconds == 0.5


def test_database_url_overrides_pizza_home(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"PIZZA_HOME": str(tmp_path), "PIZZA_DATABASE_URL": "postgresql://db/pizza"}
    )
    assert settings.store_url == "postgresql://db/pizza"


@pytest.mark.parametrize("field", ["cvv", "CVC", "security_code", "cvv2"])
def test_an_order_carrying_a_security_code_is_refused_saying_not_to_send_it(field: str) -> None:
    data = example_order().model_dump()
    data["credit_card_info"][field] = "123"

    with pytest.raises(ValidationError) as refused:
        PizzaOrder.model_validate(data)

    message = describe_validation_error(refused.value, "order")
    assert f"do not send the card's security code ({field})" in message
    assert "123" not in message


def test_the_workflow_input_carries_a_token_never_a_card_number() -> None:
    from datetime import UTC, datetime

    from pizza_saga.billing.models import CardToken
    from pizza_saga.order.models import OrderRequest, PlacedOrder

    card = CardToken(
        token="tok_" + "a" * 32, brand="visa", last4="4242", expires_at=datetime.now(UTC)
    )
    placed = example_order().placed(card)
    assert GOOD_CARD not in placed.model_dump_json()
    assert placed.card.token == card and placed.card.holder_name == "Lisa Anderson"

    raw = {"order": example_order().model_dump()}
    with pytest.raises(ValidationError, match="must never be sent to the order workflow"):
        OrderRequest.model_validate(raw)
    with pytest.raises(ValidationError):
        PlacedOrder.model_validate(example_order().model_dump())


@pytest.mark.parametrize(
    "value", ["localhost:9464", "9464", "127.0.0.1:", "127.0.0.1:0", "::1:9464"]
)
def test_metrics_address_must_be_an_ip_address_and_port(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"PIZZA_METRICS_ADDRESS": value})
    assert str(caught.value).startswith("PIZZA_METRICS_ADDRESS: "), str(caught.value)
    assert "IP address and port" in str(caught.value)


def test_metrics_are_off_and_logs_are_text_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.metrics_address is None
    assert settings.log_format == "text"
    on = Settings.from_env({"PIZZA_METRICS_ADDRESS": "[::1]:9464", "PIZZA_LOG_FORMAT": "json"})
    assert (on.metrics_address, on.log_format) == ("[::1]:9464", "json")
    with pytest.raises(SettingsError, match=r"^PIZZA_LOG_FORMAT: "):
        Settings.from_env({"PIZZA_LOG_FORMAT": "xml"})
