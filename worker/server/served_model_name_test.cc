#include "worker/server/served_model_name.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace llorch {
namespace {

TEST(DefaultServedModelNameTest, FileLosesItsLastExtension) {
  EXPECT_EQ(DefaultServedModelName("/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
            "SmolLM2-135M-Instruct.Q4_1");
  EXPECT_EQ(DefaultServedModelName("tiny-f32-gqa.gguf"), "tiny-f32-gqa");
  EXPECT_EQ(DefaultServedModelName("./m/model"), "model");
  EXPECT_EQ(DefaultServedModelName("/m/.hidden"), ".hidden");
}

TEST(DefaultServedModelNameTest, DirectoryKeepsItsDots) {
  char dir_template[] = "/tmp/llorch-name-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = std::string(dir_template) + "/Qwen3-0.6B";
  std::filesystem::create_directory(dir);
  EXPECT_EQ(DefaultServedModelName(dir), "Qwen3-0.6B");
  EXPECT_EQ(DefaultServedModelName(dir + "/"), "Qwen3-0.6B");
  EXPECT_EQ(DefaultServedModelName(dir + "//"), "Qwen3-0.6B");
  const std::string file = std::string(dir_template) + "/Qwen3-0.6B.Q8_0.gguf";
  std::ofstream(file) << "x";
  EXPECT_EQ(DefaultServedModelName(file), "Qwen3-0.6B.Q8_0");
  std::filesystem::remove_all(dir_template);
}

}  // namespace
}  // namespace llorch
