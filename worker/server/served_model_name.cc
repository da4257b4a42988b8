#include "worker/server/served_model_name.h"

#include <filesystem>
#include <system_error>

namespace llorch {

std::string DefaultServedModelName(const std::string& model_path) {
  std::string trimmed = model_path;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  const size_t slash = trimmed.find_last_of('/');
  std::string name = slash == std::string::npos ? trimmed : trimmed.substr(slash + 1);
  std::error_code error;
  if (!std::filesystem::is_directory(model_path, error)) {
    const size_t dot = name.find_last_of('.');
    if (dot != std::string::npos && dot > 0) name.resize(dot);
  }
  return name.empty() ? model_path : name;
}

}  // namespace llorch
