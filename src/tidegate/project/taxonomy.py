"""The built-in privacy taxonomy: data categories, data uses and data subjects.

Keys follow fideslang (the Fides taxonomy, v2): a column is classified with a data
category (`user.contact.email`), a purpose names the data uses it serves
(`marketing.communications.email`), and products are about data subjects (`customer`).

How project names are checked (`check_taxonomy`, run by `tidegate validate`):

* a key in the taxonomy: fine;
* a key that extends a known key with further segments (`user.financial.balance`
  extends `user.financial`): accepted as a project-specific sub-category, with a
  warning, which says "did you mean" when the new segment is close to a known one
  (`user.contact.emial`);
* a key whose first segment is not a taxonomy root (`usr.email`): an error.

Classifications in treatment rules are prefixes, checked the same way.
"""

from __future__ import annotations

import difflib
import re

from tidegate.errors import Problem

DATA_CATEGORIES: dict[str, str] = {
    "system": "Data about systems, not people",
    "system.authentication": "Credentials and tokens systems use to authenticate",
    "system.operations": "Operational data: logs, metrics, configuration",
    "user": "Data about a person",
    "user.account": "Account data",
    "user.account.settings": "Account settings and preferences",
    "user.account.username": "Username or handle",
    "user.authorization": "Data used to authorize a person",
    "user.authorization.biometric": "Biometric data used for authentication",
    "user.authorization.credentials": "Credentials such as passwords or PINs",
    "user.authorization.password": "Password",
    "user.behavior": "Behavioural data",
    "user.behavior.browsing_history": "Browsing history",
    "user.behavior.media_consumption": "Media consumption",
    "user.behavior.purchase_history": "Purchase history",
    "user.behavior.search_history": "Search history",
    "user.biometric": "Biometric data",
    "user.biometric.fingerprint": "Fingerprint",
    "user.biometric.retinal": "Retinal scan",
    "user.biometric.voice": "Voice recording",
    "user.biometric.health": "Health-related biometric data",
    "user.childrens": "Data of children",
    "user.contact": "Contact data",
    "user.contact.address": "Postal address",
    "user.contact.address.city": "City",
    "user.contact.address.country": "Country",
    "user.contact.address.postal_code": "Postal code",
    "user.contact.address.state": "State or region",
    "user.contact.address.street": "Street address",
    "user.contact.email": "Email address",
    "user.contact.fax_number": "Fax number",
    "user.contact.organization": "Organization",
    "user.contact.phone_number": "Phone number",
    "user.contact.url": "Personal URL",
    "user.content": "Content a person created",
    "user.content.private": "Private content",
    "user.content.public": "Public content",
    "user.content.self_image": "Photos of the person",
    "user.criminal_history": "Criminal history",
    "user.demographic": "Demographic data",
    "user.demographic.age_range": "Age range",
    "user.demographic.date_of_birth": "Date of birth",
    "user.demographic.gender": "Gender",
    "user.demographic.language": "Language",
    "user.demographic.marital_status": "Marital status",
    "user.demographic.political_opinion": "Political opinion",
    "user.demographic.profile": "Profile data",
    "user.demographic.race_ethnicity": "Race or ethnicity",
    "user.demographic.religious_belief": "Religious belief",
    "user.demographic.sexual_orientation": "Sexual orientation",
    "user.device": "Device data",
    "user.device.cookie": "Cookie data",
    "user.device.cookie_id": "Cookie identifier",
    "user.device.device_id": "Device identifier",
    "user.device.ip_address": "IP address",
    "user.financial": "Financial data",
    "user.financial.bank_account": "Bank account number (IBAN)",
    "user.financial.credit_card": "Payment card number",
    "user.government_id": "Government identifiers",
    "user.government_id.birth_certificate": "Birth certificate",
    "user.government_id.drivers_license_number": "Driver's licence number",
    "user.government_id.immigration": "Immigration data",
    "user.government_id.national_identification_number": "National identification number",
    "user.government_id.passport_number": "Passport number",
    "user.health_and_medical": "Health and medical data",
    "user.health_and_medical.genetic": "Genetic data",
    "user.health_and_medical.insurance_beneficiary_id": "Health insurance beneficiary id",
    "user.health_and_medical.record_id": "Medical record id",
    "user.location": "Location data",
    "user.location.imprecise": "Imprecise location",
    "user.location.precise": "Precise location",
    "user.name": "Name",
    "user.name.first": "First name",
    "user.name.last": "Last name",
    "user.privacy_preferences": "Consent and privacy choices",
    "user.social": "Social graph and social media data",
    "user.telemetry": "Telemetry",
    "user.unique_id": "Unique identifier of a person",
    "user.unique_id.pseudonymous": "Pseudonymous identifier",
    "user.workplace": "Workplace",
    "user.job_title": "Job title",
}

DATA_USES: dict[str, str] = {
    "analytics": "Analysing data",
    "analytics.reporting": "Reporting",
    "analytics.reporting.ad_performance": "Ad performance reporting",
    "analytics.reporting.campaign_insights": "Campaign insights",
    "analytics.reporting.content_performance": "Content performance",
    "analytics.reporting.system": "System reporting",
    "collect": "Collecting data",
    "employment": "Employment",
    "employment.recruitment": "Recruitment",
    "essential": "Essential to provide the service",
    "essential.fraud_detection": "Fraud detection",
    "essential.legal_obligation": "Meeting legal obligations",
    "essential.service": "Providing the service",
    "essential.service.authentication": "Authentication",
    "essential.service.notifications": "Service notifications",
    "essential.service.notifications.email": "Service email",
    "essential.service.notifications.sms": "Service SMS",
    "essential.service.operations": "Operating the service",
    "essential.service.operations.support": "Customer support",
    "essential.service.operations.support.optimization": "Support optimization",
    "essential.service.payment_processing": "Payment processing",
    "essential.service.security": "Security",
    "essential.service.upgrades": "Upgrades",
    "finance": "Financial and tax processing",
    "functional": "Functional",
    "functional.service": "Functional service",
    "functional.service.improve": "Improving the service",
    "functional.storage": "Storage",
    "marketing": "Marketing",
    "marketing.advertising": "Advertising",
    "marketing.advertising.first_party": "First-party advertising",
    "marketing.advertising.first_party.contextual": "Contextual first-party advertising",
    "marketing.advertising.first_party.targeted": "Targeted first-party advertising",
    "marketing.advertising.frequency_capping": "Frequency capping",
    "marketing.advertising.negative_targeting": "Negative targeting",
    "marketing.advertising.profiling": "Profiling for advertising",
    "marketing.advertising.third_party": "Third-party advertising",
    "marketing.advertising.third_party.targeted": "Targeted third-party advertising",
    "marketing.communications": "Marketing communications",
    "marketing.communications.email": "Marketing email",
    "marketing.communications.sms": "Marketing SMS",
    "personalize": "Personalization",
    "personalize.content": "Content personalization",
    "personalize.system": "System personalization",
    "sales": "Sales",
    "third_party_sharing": "Sharing with third parties",
    "third_party_sharing.legal_obligation": "Sharing required by law",
    "third_party_sharing.payment_processing": "Sharing for payment processing",
    "train_ai_system": "Training AI systems",
}

DATA_SUBJECTS: dict[str, str] = {
    "anonymous_user": "A person not identified",
    "citizen_voter": "Citizen or voter",
    "commuter": "Commuter",
    "consultant": "Consultant",
    "customer": "Customer",
    "employee": "Employee",
    "job_applicant": "Job applicant",
    "next_of_kin": "Next of kin",
    "passenger": "Passenger",
    "patient": "Patient",
    "prospect": "Prospect",
    "shareholder": "Shareholder",
    "supplier_vendor": "Supplier or vendor",
    "trainee": "Trainee",
    "visitor": "Visitor",
}

#: data uses that amount to a sale or sharing of personal data (CCPA/CPRA): the
#: purposes serving them are opted out by a Global Privacy Control signal
SALE_OR_SHARING_USES = ("marketing.advertising.third_party", "third_party_sharing")


def known_parent(key: str, table: dict[str, str]) -> str | None:
    """The longest key of `table` that `key` equals or extends."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in table:
            return candidate
    return None


def judge(key: str, table: dict[str, str], what: str) -> tuple[str, str] | None:
    """None when fine, else ("error" | "warning", message)."""
    if key in table:
        return None
    parent = known_parent(key, table)
    if parent is None:
        roots = sorted({k.split(".")[0] for k in table})
        return "error", f"{what} {key!r} is not in the taxonomy (roots: {', '.join(roots)})"
    segment = key[len(parent) + 1 :].split(".")[0]
    siblings = [k[len(parent) + 1 :] for k in table if k.startswith(parent + ".")]
    siblings = [s for s in siblings if "." not in s]
    close = difflib.get_close_matches(segment, siblings, n=1, cutoff=0.75)
    hint = f"; did you mean {parent}.{close[0]}?" if close else ""
    return (
        "warning",
        f"{what} {key!r} is not in the built-in taxonomy; treated as a sub-category of "
        f"{parent!r}{hint}",
    )


# column name patterns (whole words of snake/camel case names): `tidegate classify` uses
# them beside its value detectors, `tidegate validate` to suggest a missing classification
NAME_RULES: list[tuple[str, str]] = [
    (r"e_?mail", "user.contact.email"),
    (r"(phone|mobile|msisdn|tel|telephone|cell)(_?(number|no))?", "user.contact.phone_number"),
    (r"(ip|ip_?addr(ess)?|client_?ip|remote_?addr)", "user.device.ip_address"),
    (r"(card|cc|pan|credit_?card)(_?(number|no|num))?", "user.financial.credit_card"),
    (r"(iban|bank_?account|account_?number)", "user.financial.bank_account"),
    (r"(dob|date_?of_?birth|birth_?date|birthday|born(_on)?)", "user.demographic.date_of_birth"),
    (r"(zip|zip_?code|postal_?code|postcode|plz)", "user.contact.address.postal_code"),
    (r"(first_?name|given_?name|forename)", "user.name.first"),
    (r"(last_?name|surname|family_?name)", "user.name.last"),
    (r"(full_?name|name|customer_?name|display_?name)", "user.name"),
    (r"(street|address(_?line_?\d)?|street_?address)", "user.contact.address.street"),
    (r"city|town", "user.contact.address.city"),
    (r"country(_?code)?", "user.contact.address.country"),
    (r"(state|region|province)", "user.contact.address.state"),
    (r"(gender|sex)", "user.demographic.gender"),
    (r"(ssn|national_?id|passport(_?number)?)", "user.government_id"),
    (r"(cookie_?id|device_?id|idfa|gaid)", "user.device.device_id"),
    (r"(user|customer|person|member|subject|account)_?id", "user.unique_id"),
    (r"(lat|latitude|lon|lng|longitude|geo)", "user.location.precise"),
]


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def name_hint(column: str) -> str | None:
    snake = _snake(column)
    for pattern, classification in NAME_RULES:
        if re.fullmatch(pattern, snake):
            return classification
    return None


def is_sale_or_sharing(data_uses: list[str]) -> bool:
    return any(
        use == shared or use.startswith(shared + ".")
        for use in data_uses
        for shared in SALE_OR_SHARING_USES
    )


def check_taxonomy(project: object) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) about classifications and data uses, each at its file:line."""
    from tidegate.project.project import Project

    assert isinstance(project, Project)
    errors: list[Problem] = []
    warnings: list[Problem] = []

    def add(found: tuple[str, str] | None, problem: Problem) -> None:
        if found is not None:
            (errors if found[0] == "error" else warnings).append(
                Problem(problem.file, problem.line, problem.field, found[1])
            )

    for kind, items in (("source", project.sources), ("product", project.products)):
        for item in items.values():
            for column, spec in item.columns.items():
                if spec.category:
                    where = item.doc.problem(("columns", column, "classification"), "")
                    found = judge(
                        spec.category,
                        DATA_CATEGORIES,
                        f"{kind} column {item.name}.{column}: classification",
                    )
                    add(found, where)
    policy = project.policy
    for name, purpose in policy.purposes.items():
        doc, base = policy.origins[("purpose", name)]
        for index, use in enumerate(purpose.data_uses):
            where = doc.problem((*base, "data_uses", index), "")
            add(judge(use, DATA_USES, f"purpose {name!r}: data use"), where)
    for scope, rules in policy.treatments.items():
        origin = policy.origins.get(("treatments", scope))
        for prefix in rules:
            if prefix == "unclassified" or origin is None:
                continue
            doc, base = origin
            where = doc.problem((*base, prefix), "")
            add(judge(prefix, DATA_CATEGORIES, f"treatment rule under {scope!r}"), where)
    return errors, warnings
