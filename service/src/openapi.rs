//! Rules both services apply to their generated OpenAPI documents, so the committed
//! documents say what the services really answer.

use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

/// Every operation of `item`.
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
    ]
    .into_iter()
    .flatten()
}

/// Header parameters are text or absent: an `Option<String>` header was documented as
/// nullable, which no HTTP header can be.
pub fn headers_are_strings(operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        if parameter.parameter_in == ParameterIn::Header
            && let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut()
            && let SchemaType::Array(types) = &object.schema_type
            && types.contains(&Type::Null)
        {
            object.schema_type = SchemaType::Type(Type::String);
        }
    }
}

/// Adds each `(status, description)` the operation does not document yet, answered with a
/// `Problem` body (the schema must be registered under that name).
pub fn add_problem_responses(operation: &mut Operation, responses: &[(&str, &str)]) {
    for (status, description) in responses {
        operation
            .responses
            .responses
            .entry((*status).to_owned())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(*description)
                    .content(
                        "application/problem+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build()
                    .into()
            });
    }
}
