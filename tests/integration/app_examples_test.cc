// The examples of docs/app-integration.md (client/examples/) serve a real HTTPS request through
// the real agent: the C and C++ programs, and the Python one through ctypes and libktls_client.so.
// In the VM suite the request must go over kTLS (the examples print the data path they got);
// python3 is part of the VM's base image (tests/vm/build-initramfs.sh, KTLS_VM_BASE_TOOLS).
#include <stdlib.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/support/app_harness.h"
#include "tests/integration/support/harness.h"

namespace ktls::testing {
namespace {

class AppExamplesTest : public ::testing::Test {
 protected:
  void SetUp() override { stack_ = std::make_unique<Stack>(AgentOnly()); }

  // Starts `argv` + the handoff socket as the app and sends it one request.
  void ServeOneRequest(std::vector<std::string> argv, const std::string& greeting) {
    ASSERT_GT(stack_->port(), 0);
    argv.push_back(stack_->handoff_socket());
    Process app(argv, stack_->dir() + "/example.log");
    ASSERT_TRUE(WaitUntil(
        [&] { return app.Log().find("subscribed to") != std::string::npos || !app.Running(); },
        60000))
        << app.Log();
    ASSERT_TRUE(app.Running()) << "example exited:\n" << app.Log();
    Exchange e = Get(stack_->port(), "/");
    ASSERT_TRUE(e.ok) << e.error << "\nexample log:\n"
                      << app.Log() << "\nagent log:\n"
                      << stack_->AgentLog();
    EXPECT_EQ(200, e.status);
    EXPECT_EQ(0u, e.body.find(greeting)) << e.body;
    std::string lower = e.body;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (ExpectOffload()) {
      EXPECT_NE(std::string::npos, lower.find("over ktls")) << "not served over kTLS: " << e.body;
    } else if (!stack_->ktls_available()) {
      EXPECT_NE(std::string::npos, lower.find("over relay")) << e.body;
    }
    EXPECT_NE(std::string::npos, e.body.find("TLSv1.3")) << e.body;
    // A second connection: the example granted a credit back.
    Exchange again = Get(stack_->port(), "/");
    EXPECT_TRUE(again.ok && again.status == 200) << again.error;
  }

  std::unique_ptr<Stack> stack_;
};

TEST_F(AppExamplesTest, CExampleServesHttps) {
  ServeOneRequest({ExampleCBin()}, "hello from C over ");
}

TEST_F(AppExamplesTest, CppExampleServesHttps) {
  ServeOneRequest({ExampleCppBin()}, "hello from C++ over ");
}

TEST_F(AppExamplesTest, PythonCtypesExampleServesHttps) {
  const std::string python = Python3();
  // Not a skip: a missing interpreter fails, in the VM too (its base image must carry python3).
  ASSERT_FALSE(python.empty()) << "python3 not found";
  ASSERT_EQ(0, setenv("KTLS_CLIENT_LIB", ClientSharedLib().c_str(), 1));
  ServeOneRequest({python, ExamplePy()}, "hello from Python over ");
}

}  // namespace
}  // namespace ktls::testing
